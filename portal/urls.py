"""/portal/: the customer portal. Each area has its own URL module."""

from django.urls import path

from portal.views import contact as contact_views
from portal.views import credits as credit_views
from portal.views import dashboard
from portal.views import invoices as invoice_views
from portal.views import payment_methods as method_views
from portal.views import payments as payment_views
from portal.views import profile as profile_views
from portal.views import statements as statement_views
from portal.views import subscription_changes as change_views
from portal.views import subscriptions as subscription_views

app_name = "portal"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("invoices/", invoice_views.invoice_list, name="invoices"),
    path("invoices/<uuid:public_id>/", invoice_views.invoice_detail, name="invoice_detail"),
    path("invoices/<uuid:public_id>/pdf/", invoice_views.invoice_pdf, name="invoice_pdf"),
    path("invoices/<uuid:public_id>/print/", invoice_views.invoice_print, name="invoice_print"),
    path(
        "invoices/<uuid:public_id>/forward/",
        invoice_views.invoice_forward_view,
        name="invoice_forward",
    ),
    # Paying, payments and payment methods.
    path("invoices/<uuid:public_id>/pay/", payment_views.invoice_pay, name="invoice_pay"),
    path("pay-all/", payment_views.pay_all, name="pay_all"),
    path("payments/", payment_views.payment_list, name="payments"),
    path("payments/<uuid:public_id>/", payment_views.payment_detail, name="payment_detail"),
    path("payments/<uuid:public_id>/pdf/", payment_views.payment_pdf, name="payment_pdf"),
    path("payment-methods/", method_views.payment_methods, name="payment_methods"),
    path("payment-methods/add/", method_views.payment_method_new, name="payment_method_add"),
    path(
        "payment-methods/<uuid:public_id>/default/",
        method_views.payment_method_default,
        name="payment_method_default",
    ),
    path(
        "payment-methods/<uuid:public_id>/remove/",
        method_views.payment_method_delete,
        name="payment_method_remove",
    ),
    path(
        "payment-methods/<uuid:public_id>/replace/",
        method_views.payment_method_swap,
        name="payment_method_replace",
    ),
    # Credits, statement of account, company profile, contacting the merchant.
    path("credits/", credit_views.credit_list, name="credits"),
    path("statement/", statement_views.statement, name="statement"),
    path("statement/print/", statement_views.statement_print, name="statement_print"),
    path("statement/pdf/", statement_views.statement_pdf, name="statement_pdf"),
    path("company/", profile_views.company, name="company"),
    path("company/edit/", profile_views.company_edit, name="company_edit"),
    path("company/contacts/add/", profile_views.contact_add, name="company_contact_add"),
    path(
        "company/contacts/<uuid:public_id>/edit/",
        profile_views.contact_edit,
        name="company_contact_edit",
    ),
    path(
        "company/contacts/<uuid:public_id>/remove/",
        profile_views.contact_remove,
        name="company_contact_remove",
    ),
    path("contact/", contact_views.contact, name="contact"),
    path("review/", contact_views.review, name="review"),
    # Changing, reactivating and recovering a subscription.
    path(
        "subscriptions/<uuid:public_id>/change/",
        change_views.subscription_change_view,
        name="subscription_change",
    ),
    path(
        "subscriptions/<uuid:public_id>/scheduled-change/cancel/",
        change_views.scheduled_change_cancel,
        name="scheduled_change_cancel",
    ),
    path(
        "subscriptions/<uuid:public_id>/reactivate/",
        change_views.subscription_reactivate_view,
        name="subscription_reactivate",
    ),
    path(
        "subscriptions/<uuid:public_id>/recover/",
        change_views.subscription_recover,
        name="subscription_recover",
    ),
    # Subscriptions: list, detail, trials, cancel, pause/resume, automatic payments.
    path("subscriptions/", subscription_views.subscription_list, name="subscriptions"),
    path(
        "subscriptions/<uuid:public_id>/",
        subscription_views.subscription_detail,
        name="subscription_detail",
    ),
    path(
        "subscriptions/<uuid:public_id>/convert/",
        subscription_views.subscription_convert,
        name="subscription_convert",
    ),
    path(
        "subscriptions/<uuid:public_id>/extend-trial/",
        subscription_views.subscription_extend,
        name="subscription_extend",
    ),
    path(
        "subscriptions/<uuid:public_id>/cancel/",
        subscription_views.subscription_cancel_view,
        name="subscription_cancel",
    ),
    path(
        "subscriptions/<uuid:public_id>/cancel/undo/",
        subscription_views.subscription_cancel_undo_view,
        name="subscription_cancel_undo",
    ),
    path(
        "subscriptions/<uuid:public_id>/cancel/stay/",
        subscription_views.subscription_keep,
        name="subscription_keep",
    ),
    path(
        "subscriptions/<uuid:public_id>/pause/",
        subscription_views.subscription_pause_view,
        name="subscription_pause",
    ),
    path(
        "subscriptions/<uuid:public_id>/pause/remove/",
        subscription_views.subscription_pause_remove,
        name="subscription_pause_remove",
    ),
    path(
        "subscriptions/<uuid:public_id>/resume/",
        subscription_views.subscription_resume_view,
        name="subscription_resume",
    ),
    path(
        "subscriptions/<uuid:public_id>/auto-charge/",
        subscription_views.subscription_auto_charge,
        name="subscription_auto_charge",
    ),
]
