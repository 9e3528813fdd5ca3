"""Typed domain errors. Each message is fit to show a customer; views turn them into messages."""


class BillingError(Exception):
    """A business rule refused the request. Nothing was written."""

    default_message = "This action is not possible."

    def __init__(self, message: str | None = None, *, field: str | None = None):
        self.message = message or self.default_message
        # The form field the problem belongs to, so a view can show it next to that field.
        self.field = field
        super().__init__(self.message)


class InvalidTransition(BillingError):
    default_message = "This action is not possible in the current state."


class ValidationFailed(BillingError):
    default_message = "Some of the details are not valid."


class NotAllowed(BillingError):
    default_message = "This action is switched off."


class PaymentFailed(BillingError):
    default_message = "The payment did not go through."


class PaymentInProgress(BillingError):
    default_message = "A payment for this invoice is already being processed."
