from allauth.core import ratelimit
from django import forms
from django.contrib.auth import authenticate

from accounts.models import User


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=20,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )


class PasskeyNameForm(forms.Form):
    """The name a passkey is listed under (django-otp's device names hold 64 characters)."""

    name = forms.CharField(label="Name", max_length=64, required=False, strip=True)


class ReauthenticateForm(forms.Form):
    """Confirm it is still you: your password, or a current code from your authenticator."""

    password = forms.CharField(
        label="Password",
        required=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    code = forms.CharField(
        label="Or a code from your authenticator app",
        required=False,
        max_length=20,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def __init__(self, *args, user: User, request, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.request = request
        self.device = None

    def clean(self):
        from accounts.otp import OTPError, verify_code

        data = super().clean()
        password, code = data.get("password"), data.get("code")
        if (password or code) and not ratelimit.consume(
            self.request, action="reauthenticate", user=self.user
        ):
            # ACCOUNT_RATE_LIMITS["reauthenticate"]: a stolen session cannot guess the password.
            raise forms.ValidationError("Too many attempts. Wait a minute, then try again.")
        if password:
            if authenticate(self.request, email=self.user.email, password=password) is None:
                self.add_error("password", "That password is not correct.")
        elif code:
            try:
                self.device = verify_code(
                    user=self.user, code=code, ip=client_ip(self.request)
                ).device
            except OTPError as error:
                self.add_error("code", str(error))
        else:
            raise forms.ValidationError("Enter your password or a code.")
        return data


class ProfileForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["full_name"]
        labels = {"full_name": "Your name"}


def client_ip(request) -> str:
    # Behind a proxy, configure it to set REMOTE_ADDR (e.g. gunicorn --forwarded-allow-ips).
    return request.META.get("REMOTE_ADDR", "")
