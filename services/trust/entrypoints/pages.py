"""The HTML pages of the login flow: the login page, the page that sends the browser on to
the client's redirect URI, and the page a login with nowhere to return to ends on."""

from __future__ import annotations

import html

from services.trust.service_layer.login import LoginPage


def login_page(page: LoginPage) -> str:
    e = html.escape
    action = e(page.action)
    hidden = (
        f'<input type="hidden" name="client_id" value="{e(page.client_id)}">\n'
        f'<input type="hidden" name="request_uri" value="{e(page.request_uri)}">\n'
    )
    providers = "".join(
        # The choice is the button's own value (not a hidden field), so a script that
        # fills the TestID form from the page's hidden fields never picks a provider.
        f'<form method="post" action="{action}">\n{hidden}'
        f'<button type="submit" name="idp" value="{e(idp.name)}">{e(idp.title)}'
        f"{' (health personnel)' if idp.kind == 'personnel' else ''}</button>\n</form>\n"
        for idp in page.providers
    )
    if providers:
        providers = f"<h2>Log in with</h2>\n{providers}"
    testid = ""
    if page.testid:
        testid = f"""<h2>TestID &mdash; test login (dev/test only)</h2>
<p>Use a synthetic identity only.</p>
<form method="post" action="{action}">
{hidden}<label>National identity number (citizen) <input name="pid" autocomplete="off"></label><br>
<label>HPR number (health personnel) <input name="hpr_number" autocomplete="off"></label><br>
<button type="submit">Log in (security level 4)</button>
</form>
"""
    title = "TestID login" if not providers else "Log in"
    return f"""<!doctype html>
<html lang="no"><head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{title}</h1>
<p>{e(page.client_name)} asks you to log in.</p>

{providers}{testid}</body></html>
"""


def redirect_page(location: str, notice: str = "") -> str:
    """The transcoder cannot answer 302: the `Location` header plus an immediate refresh get
    browsers (and clients reading Location) to the client's redirect URI. A failed login
    says why on the page before it returns to the client."""
    target = html.escape(location)
    said = ""
    if notice:
        said = f"<h1>Login failed</h1><p>{html.escape(notice)}</p>"
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{3 if notice else 0};url={target}">'
        f"<title>{'Login failed' if notice else 'Redirecting'}</title>"
        f'</head><body>{said}<a href="{target}">Continue</a></body></html>'
    )


def message_page(title: str, text: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(text)}</p></body></html>"
    )
