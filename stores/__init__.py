"""Secret stores: one interface, the `local` envelope-encrypted store and the `vault` store.
`stores.registry` builds them by name from settings."""
