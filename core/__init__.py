"""The bottom layer: the error hierarchy, the request origin and logging helpers. It imports
no other project package and no web framework."""
