"""Gapless document numbers: consecutive, formatted per sequence, and safe under concurrency."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction

from billing.enums import DocumentKind
from billing.models import DocumentSequence
from billing.services.numbering import document_number_allocate, document_numbers_allocate


@pytest.mark.django_db
def test_document_numbers_allocate_missing_sequence_creates_default_and_starts_at_one():
    assert document_numbers_allocate(kind=DocumentKind.INVOICE) == ["INV-000001"]

    sequence = DocumentSequence.objects.get(kind=DocumentKind.INVOICE)
    assert (sequence.prefix, sequence.padding, sequence.next_number) == ("INV-", 6, 2)


@pytest.mark.django_db
def test_document_numbers_allocate_successive_calls_consecutive_numbers():
    first = document_numbers_allocate(kind=DocumentKind.RECEIPT, count=3)
    second = document_numbers_allocate(kind=DocumentKind.RECEIPT, count=2)
    third = document_number_allocate(kind=DocumentKind.RECEIPT)

    assert [*first, *second, third] == [f"RCPT-{n:06d}" for n in range(1, 7)]


@pytest.mark.django_db
def test_document_numbers_allocate_existing_sequence_uses_its_prefix_padding_and_counter():
    DocumentSequence.objects.create(
        kind=DocumentKind.CREDIT_NOTE, prefix="CR/2026/", padding=4, next_number=41
    )

    numbers = document_numbers_allocate(kind=DocumentKind.CREDIT_NOTE, count=2)

    assert numbers == ["CR/2026/0041", "CR/2026/0042"]
    assert DocumentSequence.objects.get(kind=DocumentKind.CREDIT_NOTE).next_number == 43


@pytest.mark.django_db
def test_document_numbers_allocate_different_kinds_count_independently():
    document_numbers_allocate(kind=DocumentKind.INVOICE, count=5)

    assert document_number_allocate(kind=DocumentKind.CREDIT_NOTE) == "CN-000001"
    assert document_number_allocate(kind=DocumentKind.INVOICE) == "INV-000006"


@pytest.mark.django_db
@pytest.mark.parametrize("count", [0, -1])
def test_document_numbers_allocate_count_below_one_raises_and_takes_nothing(count):
    with pytest.raises(ValueError, match="at least 1"):
        document_numbers_allocate(kind=DocumentKind.INVOICE, count=count)

    assert document_number_allocate(kind=DocumentKind.INVOICE) == "INV-000001"


@pytest.mark.django_db
def test_document_numbers_allocate_rolled_back_caller_number_reused_no_gap():
    document_number_allocate(kind=DocumentKind.INVOICE)

    taken = []

    def finalize_then_fail() -> None:
        with transaction.atomic():
            taken.append(document_number_allocate(kind=DocumentKind.INVOICE))
            raise RuntimeError("the finalization failed after taking its number")

    with pytest.raises(RuntimeError):
        finalize_then_fail()

    assert taken == ["INV-000002"]
    assert document_number_allocate(kind=DocumentKind.INVOICE) == "INV-000002"


@pytest.mark.django_db(transaction=True)
def test_document_numbers_allocate_concurrent_threads_distinct_and_gapless():
    threads, per_thread = 8, 25
    # All threads start together so the first allocations also race to create the sequence.
    start = threading.Barrier(threads)

    def allocate_many(_: int) -> list[str]:
        try:
            start.wait(timeout=30)
            return [document_number_allocate(kind=DocumentKind.INVOICE) for _ in range(per_thread)]
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(allocate_many, range(threads)))

    numbers = [number for result in results for number in result]
    assert len(numbers) == threads * per_thread
    assert len(set(numbers)) == len(numbers)
    assert sorted(numbers) == [f"INV-{n:06d}" for n in range(1, threads * per_thread + 1)]
    # Within one thread, numbers only go up.
    assert all(result == sorted(result) for result in results)
    assert DocumentSequence.objects.get(kind=DocumentKind.INVOICE).next_number == 201
