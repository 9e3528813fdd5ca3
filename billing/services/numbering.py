"""Gapless document numbers for invoices, credit notes and receipts.

Each kind has one ``DocumentSequence`` row, locked ``FOR UPDATE`` while numbers are taken, so two
finalizations at once wait for each other instead of reading the same ``MAX(number)``. Numbers
are taken inside the caller's transaction: if that transaction rolls back, so does the counter,
and no number is ever skipped.
"""

from django.db import transaction

from billing.enums import DocumentKind
from billing.models import DocumentSequence

DEFAULT_PREFIXES: dict[str, str] = {
    DocumentKind.INVOICE: "INV-",
    DocumentKind.CREDIT_NOTE: "CN-",
    DocumentKind.RECEIPT: "RCPT-",
}
DEFAULT_PADDING = 6


def document_sequence_get_or_create(*, kind: DocumentKind) -> DocumentSequence:
    """The sequence row of ``kind``, created with the default prefix and padding if missing."""
    sequence, _ = DocumentSequence.objects.get_or_create(
        kind=kind,
        defaults={"prefix": DEFAULT_PREFIXES[kind], "padding": DEFAULT_PADDING},
    )
    return sequence


def document_numbers_allocate(*, kind: DocumentKind, count: int = 1) -> list[str]:
    """Take ``count`` consecutive numbers of ``kind``; numbers are never skipped nor reused."""
    if count < 1:
        raise ValueError("count must be at least 1")
    with transaction.atomic():
        try:
            sequence = DocumentSequence.objects.select_for_update().get(kind=kind)
        except DocumentSequence.DoesNotExist:
            # Two first callers may race to create the row: get_or_create settles it on the
            # unique kind, and the lock below then serialises them as usual.
            document_sequence_get_or_create(kind=kind)
            sequence = DocumentSequence.objects.select_for_update().get(kind=kind)
        first = sequence.next_number
        sequence.next_number = first + count
        sequence.save(update_fields=["next_number"])
    return [sequence.format(number) for number in range(first, first + count)]


def document_number_allocate(*, kind: DocumentKind) -> str:
    """Take the next number of ``kind``."""
    return document_numbers_allocate(kind=kind, count=1)[0]
