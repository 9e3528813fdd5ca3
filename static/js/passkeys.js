/*
 * Passkeys: runs the WebAuthn ceremonies for elements marked data-passkey="register" or
 * data-passkey="authenticate" (templates/accounts/_passkey.html). No inline script: the
 * endpoints and the CSRF token come from data- attributes.
 *
 * Begin answers the options as JSON (binary values base64url-encoded); the browser's answer goes
 * to complete, which says where to go next. A refusal carries {"detail", "code"}. When the
 * server redirects instead (the pending sign-in is gone, the session ended) or asks to confirm
 * it's you, the page is loaded again and its own guard sends the user on.
 *
 * Without JavaScript or WebAuthn the controls stay hidden and disabled; the rest of the page
 * works without them.
 */
(function () {
  "use strict";

  if (!window.PublicKeyCredential || !navigator.credentials) {
    return;
  }

  const RELOAD_CODES = new Set(["reauthentication_required", "not_authenticated"]);
  const BROWSER_MESSAGES = {
    register: {
      NotAllowedError: "No passkey was created: the request was cancelled or timed out.",
      InvalidStateError: "This device already holds a passkey for your account.",
    },
    authenticate: {
      NotAllowedError:
        "No passkey was used: the request was cancelled, timed out, or this device has no passkey for your account.",
    },
    any: {
      AbortError: "The passkey request was cancelled.",
      SecurityError: "Passkeys cannot be used on this address.",
      NotSupportedError: "This device cannot create a passkey this site accepts.",
    },
  };

  class Refusal extends Error {}

  function bytesFromBase64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const bytes = new Uint8Array(binary.length);
    for (let index = 0; index < binary.length; index += 1) {
      bytes[index] = binary.charCodeAt(index);
    }
    return bytes.buffer;
  }

  function base64urlFromBytes(buffer) {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) {
      binary += String.fromCharCode(byte);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map((item) => ({ ...item, id: bytesFromBase64url(item.id) }));
  }

  function creationOptions(options) {
    return {
      ...options,
      challenge: bytesFromBase64url(options.challenge),
      user: { ...options.user, id: bytesFromBase64url(options.user.id) },
      excludeCredentials: descriptors(options.excludeCredentials),
    };
  }

  function requestOptions(options) {
    return {
      ...options,
      challenge: bytesFromBase64url(options.challenge),
      allowCredentials: descriptors(options.allowCredentials),
    };
  }

  function credentialJSON(credential) {
    const answer = credential.response;
    const response = { clientDataJSON: base64urlFromBytes(answer.clientDataJSON) };
    if (answer.attestationObject) {
      response.attestationObject = base64urlFromBytes(answer.attestationObject);
      response.transports = answer.getTransports ? answer.getTransports() : [];
    } else {
      response.authenticatorData = base64urlFromBytes(answer.authenticatorData);
      response.signature = base64urlFromBytes(answer.signature);
      if (answer.userHandle) {
        response.userHandle = base64urlFromBytes(answer.userHandle);
      }
    }
    const json = {
      id: credential.id,
      rawId: base64urlFromBytes(credential.rawId),
      type: credential.type,
      response,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
    if (credential.authenticatorAttachment) {
      json.authenticatorAttachment = credential.authenticatorAttachment;
    }
    return json;
  }

  function reloadPage() {
    // A GET of the page's own address (never a form's re-submission).
    window.location.assign(window.location.href);
  }

  async function post(url, token, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        Accept: "application/json",
        "Content-Type": "application/json",
        "X-CSRFToken": token,
      },
      body: JSON.stringify(body),
    });
    if (response.redirected) {
      reloadPage();
      return null;
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.ok && data) {
      return data;
    }
    if (data && RELOAD_CODES.has(data.code)) {
      reloadPage();
      return null;
    }
    throw new Refusal(
      (data && data.detail) || "Something went wrong on our side. Try again in a moment.",
    );
  }

  function messageFor(error, mode) {
    if (error instanceof Refusal) {
      return error.message;
    }
    const messages = { ...BROWSER_MESSAGES.any, ...BROWSER_MESSAGES[mode] };
    return messages[error.name] || "The passkey request failed. Try again.";
  }

  async function ceremony(root, mode, nameInput) {
    const token = root.dataset.csrfToken;
    const options = await post(root.dataset.beginUrl, token, nameInput ? { name: nameInput.value } : {});
    if (!options) {
      return false;
    }
    const credential =
      mode === "register"
        ? await navigator.credentials.create({ publicKey: creationOptions(options) })
        : await navigator.credentials.get({ publicKey: requestOptions(options) });
    const result = await post(root.dataset.completeUrl, token, credentialJSON(credential));
    if (!result) {
      return false;
    }
    window.location.assign(result.redirect_url);
    return true;
  }

  function setUp(root) {
    const mode = root.dataset.passkey;
    const controls = root.querySelector("[data-passkey-controls]");
    const button = root.querySelector("[data-passkey-start]");
    const status = root.querySelector("[data-passkey-status]");
    const fallback = root.querySelector("[data-passkey-fallback]");
    const nameInput = root.querySelector("input[name=name]");

    function say(text, failed) {
      status.textContent = text;
      status.classList.toggle("mt-2", Boolean(text));
      status.classList.toggle("text-danger", Boolean(failed));
    }

    async function start(event) {
      event.preventDefault();
      if (button.disabled) {
        return;
      }
      button.disabled = true;
      say(mode === "register" ? "Follow your browser's prompts to create the passkey…" : "Follow your browser's prompts to use your passkey…");
      try {
        if (await ceremony(root, mode, nameInput)) {
          say(mode === "register" ? "Passkey created." : "Verified. One moment…");
          return;
        }
      } catch (error) {
        say(messageFor(error, mode), true);
      }
      button.disabled = false;
    }

    button.addEventListener("click", start);
    if (nameInput) {
      nameInput.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          start(event);
        }
      });
    }
    if (fallback) {
      fallback.hidden = true;
    }
    controls.hidden = false;
    controls.disabled = false;
  }

  document.querySelectorAll("[data-passkey]").forEach(setUp);
})();
