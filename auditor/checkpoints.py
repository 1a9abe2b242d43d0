"""Signed checkpoints of each chain's Merkle tree: c2sp.org/tlog-checkpoint text (origin
naming the deployment and the chain, tree size, root hash) in a c2sp.org/signed-note,
signed with the log's Ed25519 key, which the database never holds.

The signer refuses a checkpoint that does not extend the last one it signed (kept outside
the database, `auditor.archive`): a chain shorter than that checkpoint, a chain whose tree
at that size has another root, or a tree the consistency proof cannot join to it. It signs
nothing then, and the refusal is an alarm."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Max

from audit import merkle, note, tree
from audit.chain import ChainResult
from audit.models import AuditLink
from audit.verify import verify_after
from auditor import signing, witnesses
from auditor.archive import Archive, ArchiveConflict, Held, archive
from core.errors import Conflict


class CheckpointRefused(Conflict):
    code = "checkpoint_refused"
    message = "The chain does not extend its last signed checkpoint; nothing was signed."

    def __init__(self, chain: str, reason: str) -> None:
        super().__init__(f"chain {chain}: {reason}")
        self.chain, self.reason = chain, reason


@dataclass(frozen=True)
class Issued:
    """A chain's checkpoint after a signing run: new, or the one held when nothing changed."""

    chain: str
    checkpoint: note.Checkpoint
    note: str
    new: bool


def origin(chain: str) -> str:
    return f"{settings.AUDIT_ORIGIN}/{chain}"


def verifier() -> note.Verifier:
    """The log's public key as a signed-note verifier key, named by the deployment."""
    return note.Verifier.of(settings.AUDIT_ORIGIN, signing.checkpoint_signer().public_raw())


def open_held(chain: str, held: Held) -> note.Checkpoint:
    """The checkpoint a held note carries; NoteError unless the log's key signed it for
    this chain."""
    opened = note.open_note(held.note, [verifier()])
    checkpoint = note.Checkpoint.parse(opened.text)
    if checkpoint.origin != origin(chain):
        raise note.NoteError(f"it names the origin {checkpoint.origin!r}")
    return checkpoint


def chain_size(chain: str) -> int:
    return int(AuditLink.objects.filter(chain=chain).aggregate(size=Max("seq"))["size"] or 0)


def chains() -> list[str]:
    """Every chain in the database or held in the archive (a chain deleted from the
    database is still named by its checkpoint)."""
    stored = AuditLink.objects.order_by().values_list("chain", flat=True).distinct()
    return sorted(set(stored) | set(archive().chains()))


def sign_chain(chain: str, where: Archive | None = None) -> Issued:
    """Sign the chain's tree head if it grew; CheckpointRefused when it does not extend
    the checkpoint held outside the database.

    The root signed is computed, not read: the last checkpoint's tree (its complete
    subtrees, read from the database and checked against the signed root) extended by
    each event since, whose MAC, position and hashes are verified first. An event written
    with only the database's credentials therefore never enters a signed checkpoint. The
    stored tree must then agree, so the proofs it serves verify against this checkpoint."""
    where = where or archive()
    held, last = _last(chain, where)
    size = chain_size(chain)
    if last is not None and size < last.size:
        raise CheckpointRefused(
            chain,
            f"it holds {size} events, fewer than the {last.size} of its last signed "
            f"checkpoint (truncated or rolled back)",
        )
    walked = _walk(chain, last)
    if last is not None and held is not None and walked.events_checked == 0:
        return _recosigned(chain, last, held, where)
    size = (last.size if last else 0) + walked.events_checked
    _stored_tree_agrees(chain, last, size, walked.root)
    checkpoint = note.Checkpoint(origin(chain), size, walked.root)
    text = note.sign(checkpoint.text(), verifier(), signing.checkpoint_signer().sign)
    text = _cosigned(chain, checkpoint, text, last.size if last else 0, where, held)
    where.replace(chain, text, held)
    return Issued(chain, checkpoint, text, new=True)


def _recosigned(chain: str, last: note.Checkpoint, held: Held, where: Archive) -> Issued:
    """An unchanged checkpoint, offered again to the witnesses that have not cosigned it
    (one was down when it was signed)."""
    text = _cosigned(chain, last, held.note, last.size, where, held)
    if text != held.note:
        where.replace(chain, text, held)
    return Issued(chain, last, text, new=False)


def _cosigned(
    chain: str,
    checkpoint: note.Checkpoint,
    text: str,
    last_size: int,
    where: Archive,
    held: Held | None,
) -> str:
    """The note with its witnesses' cosignatures. A witness that has seen a larger or
    another tree refuses the checkpoint, which is then kept nowhere, unless another
    signer, having read more events, got to the witness first."""
    try:
        return witnesses.cosign(chain, checkpoint, text, last_size)
    except witnesses.WitnessContradicts as exc:
        if exc.seen is not None and (chain_size(chain) >= exc.seen or where.latest(chain) != held):
            raise ArchiveConflict() from None  # another signer was faster with a newer tree
        raise CheckpointRefused(chain, f"{exc} (rolled back or forked?)") from None


def _last(chain: str, where: Archive) -> tuple[Held | None, note.Checkpoint | None]:
    """The chain's checkpoint as held, and opened; CheckpointRefused when it does not
    verify or cannot be read."""
    try:
        held = where.latest(chain)
        return held, None if held is None else open_held(chain, held)
    except note.NoteError as exc:
        raise CheckpointRefused(
            chain, f"the checkpoint held outside the database does not verify ({exc})"
        ) from None


def _walk(chain: str, last: note.Checkpoint | None) -> ChainResult:
    """The events past the last checkpoint, verified on top of its tree."""
    size = last.size if last else 0
    try:
        prefix = merkle.Frontier.of(size, tree.reader(chain))
    except merkle.ProofError as exc:
        raise CheckpointRefused(chain, f"its stored tree cannot be read ({exc})") from None
    if last is not None and prefix.root() != last.root:
        raise CheckpointRefused(
            chain,
            f"its first {size} events no longer hash to the root of its last signed "
            f"checkpoint (rewritten, reordered or rolled back)",
        )
    walked = verify_after(chain, size, prefix)
    if walked.first_bad is not None:
        raise CheckpointRefused(chain, walked.first_bad.describe())
    return walked


def _stored_tree_agrees(chain: str, last: note.Checkpoint | None, size: int, root: bytes) -> None:
    try:
        if tree.head(chain, size) != root:
            raise merkle.ProofError("its root differs from the events' own")
        if last is not None:
            proof = tree.consistency(chain, last.size, size)
            merkle.verify_consistency(last.size, size, last.root, root, proof)
    except merkle.ProofError as exc:
        raise CheckpointRefused(
            chain, f"its stored tree does not agree with its events ({exc})"
        ) from None
