"""The mailer's small HTTP endpoint (Starlette, served by uvicorn in the mailer's event loop):
where the links in its e-mails lead.

- ``GET /unsubscribe/<box>/<address>/<signature>``: a page with one button;
  ``POST`` to the same link unsubscribes at once (RFC 8058 one-click: mail clients post
  ``List-Unsubscribe=One-Click`` there without showing anything). The address goes on the
  box's suppression list; its campaigns never write to it again.
- ``GET /invite/<token>``: what the invitation says (or why it cannot be used) and how the
  partner's box is set up with it.
- ``GET /healthz``.
"""

from __future__ import annotations

import asyncpg
from markupsafe import escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from bus.errors import BoxbusError
from connectors.mail.addresses import MailAddresses
from connectors.mail.campaign import read_unsubscribe, suppress
from connectors.mail.invitations import Invitations

_PAGE = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
         "</head><body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">"
         "<h1>{title}</h1>{body}</body></html>")


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status,
                        headers={"Content-Security-Policy": "default-src 'none'; "
                                 "form-action 'self'", "Cache-Control": "no-store"})


def mail_app(pool: asyncpg.Pool, addresses: MailAddresses, invitations: Invitations
             ) -> Starlette:
    async def unsubscribe(request: Request) -> HTMLResponse:
        token = request.path_params["token"]
        try:
            box, email = read_unsubscribe(addresses, token)
        except ValueError:
            return _page("Link not valid", "<p>This unsubscribe link is not valid: it was "
                         "altered or cut short. Use the whole link from the e-mail.</p>", 400)
        if request.method == "POST":
            async with pool.acquire() as conn:
                await suppress(conn, box, email, "unsubscribed (one click)")
            return _page("Unsubscribed", f"<p>{escape(email)} will get no more mailings from "
                         f"{escape(box)}.</p>")
        return _page("Unsubscribe", f"<p>Stop the mailings from {escape(box)} to "
                     f"{escape(email)}?</p><form method=\"post\"><button type=\"submit\">"
                     "Unsubscribe</button></form>")

    async def invite(request: Request) -> HTMLResponse:
        token = request.path_params["token"]
        try:
            invitation = invitations.read(token)
        except BoxbusError as exc:
            return _page("Invitation not valid", f"<p>{escape(exc.message)}.</p>"
                         f"<p>{escape(exc.hint or '')}</p>", 400)
        return _page("Your own box", (
            f"<p>You are invited to set up a box of your own as partner "
            f"<strong>{escape(invitation.partner)}</strong>. Once it runs, orders arrive in "
            "your system instead of your mailbox, with everything sent to you so far.</p>"
            "<p>Give this to the operator of the network, who runs:</p>"
            f"<pre>boxbus partner onboard {escape(invitation.partner)} --token "
            f"{escape(token)} --region REGION</pre><p>The link works once.</p>"))

    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[
        Route("/unsubscribe/{token:path}", unsubscribe, methods=["GET", "POST"]),
        Route("/invite/{token}", invite),
        Route("/healthz", healthz),
    ])
