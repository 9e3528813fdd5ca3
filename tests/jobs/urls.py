"""The project's URLs plus one thin view, standing in for any page whose action emails the
customer after commit (here: recording a payment, which queues the receipt)."""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.decorators.http import require_POST

from billing.enums import PaymentMode
from billing.models import Invoice
from billing.services.payments import payment_record_offline
from config.urls import urlpatterns as project_urlpatterns


@require_POST
def invoice_record_payment(request, pk: int) -> HttpResponse:
    invoice = get_object_or_404(Invoice, pk=pk)
    payment = payment_record_offline(
        customer=invoice.customer,
        amount=invoice.total,
        mode=PaymentMode.BANK_TRANSFER,
        invoices=[invoice],
    )
    return HttpResponse(f"Receipt {payment.receipt_number}", content_type="text/plain")


urlpatterns = [
    *project_urlpatterns,
    path("jobs-test/invoices/<int:pk>/record-payment", invoice_record_payment),
]
