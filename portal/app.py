"""The citizen portal: a backend-for-frontend (Starlette, Jinja2 templates, no JavaScript).

The browser gets server-rendered pages and one session cookie; everything else (tokens, the
DPoP key, the refresh token) stays in `portal.sessions`. Every form carries the session's
CSRF token and every POST checks it (and the Origin header, when the browser sends one).
Identity numbers never appear in URLs: the mesh's citizen APIs default to the logged-in
person, and the few forms that name a person post it in the body.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
import jwt
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal.charts import Point, trend_svg
from portal.edge import RESOURCES, AccessToken, Edge, EdgeError
from portal.i18n import LANGUAGES, ZONE, Translator, parse_time, pick
from portal.sessions import COOKIE, Acting, NotLoggedIn, Session, SessionStore
from portal.settings import Settings
from portal.verify import grown_consistently, verified_entries
from services.trust.demo_client import DpopSigner

HERE = Path(__file__).resolve().parent
PATTERNS = {
    "hpr_number": re.compile(r"^[1-9][0-9]{3,8}$"),
    "org_number": re.compile(r"^[0-9]{9}$"),
    "resh_id": re.compile(r"^[1-9][0-9]{0,8}$"),
}
PID = re.compile(r"^[0-9]{11}$")
DOMAINS = ("", "DOMAIN_RESULTS", "DOMAIN_DOCUMENTS")
PURPOSES = ("TREAT", "ETREAT", "HRESCH", "HOPERAT")
LOG_PAGE = 50
SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


# --- the application ----------------------------------------------------------------------
def create_app(settings: Settings, edge: Edge | None = None) -> Starlette:
    templates = Jinja2Templates(
        env=jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True
        )
    )
    store = SessionStore(settings.session_idle_seconds, settings.session_max_seconds)
    gateway = edge or Edge(settings)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(settings.public_url))
    edge_origin = "{0.scheme}://{0.netloc}".format(urlsplit(settings.edge_url))

    keys = jwt.PyJWKClient(f"{settings.edge_url}/.well-known/jwks.json", cache_keys=True)

    def id_token_claims(id_token: str, issuer: str) -> dict[str, Any]:
        """OIDC Core 3.1.3.7: signature (the trust service's JWKS), issuer, audience, expiry."""
        key = keys.get_signing_key_from_jwt(id_token).key
        return dict(
            jwt.decode(
                id_token,
                key,
                algorithms=["ES256"],
                audience=settings.client_id,
                issuer=issuer,
                leeway=30,
            )
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    # --- plumbing -------------------------------------------------------------------------
    def session_of(request: Request) -> Session | None:
        return store.get(request.cookies.get(COOKIE))

    def with_cookie(response: Response, session: Session) -> Response:
        response.set_cookie(
            COOKIE,
            session.sid,
            httponly=True,
            secure=settings.secure_cookies,
            samesite="lax",  # the login comes back as a top-level navigation from the IdP
            path="/",
            max_age=settings.session_max_seconds,
        )
        return response

    def render(
        request: Request, session: Session, template: str, status: int = 200, **ctx: Any
    ) -> Response:
        t = Translator(session.lang)
        response = templates.TemplateResponse(
            request,
            template,
            {
                "t": t,
                "lang": t.lang,
                "languages": LANGUAGES,
                "session": session,
                "csrf": session.csrf,
                "flashes": session.take_flashes(),
                "path": request.url.path,
                "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                **ctx,
            },
            status_code=status,
        )
        return with_cookie(response, session)

    def redirect(url: str, session: Session | None = None) -> Response:
        response = RedirectResponse(url, status_code=303)
        return with_cookie(response, session) if session else response

    async def checked_form(request: Request) -> tuple[Session, FormData]:
        """The session and the form of a POST, after the CSRF and Origin checks."""
        session = session_of(request)
        sent_origin = request.headers.get("origin")
        if sent_origin is not None and sent_origin not in (origin, "null"):
            raise HTTPException(403, "cross-origin form")
        form = await request.form()
        if session is None or not session.csrf_ok(str(form.get("csrf", ""))):
            raise HTTPException(403, "missing or wrong CSRF token")
        return session, form

    def logged_in(
        handler: Callable[[Request, Session], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def page(request: Request) -> Response:
            session = session_of(request)
            if session is None or not session.logged_in:
                return redirect("/login", session)
            try:
                return await handler(request, session)
            except NotLoggedIn:
                session.flash("info", "flash.session_ended")
                return redirect("/login", session)
            except EdgeError as exc:
                return render(
                    request, session, "error.html", status=_status(exc), error=_problem(exc)
                )

        return page

    def posted(
        handler: Callable[[Request, Session, FormData], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def action(request: Request) -> Response:
            session, form = await checked_form(request)
            if not session.logged_in:
                return redirect("/login", session)
            try:
                return await handler(request, session, form)
            except NotLoggedIn:
                return redirect("/login", session)
            except EdgeError as exc:
                return render(
                    request, session, "error.html", status=_status(exc), error=_problem(exc)
                )

        return action

    # --- login and logout -----------------------------------------------------------------
    async def home(request: Request) -> Response:
        session = session_of(request)
        return redirect("/results" if session and session.logged_in else "/login", session)

    async def login_page(request: Request) -> Response:
        session = session_of(request) or store.new(_accepted(request))
        if session.logged_in:
            return redirect("/results", session)
        return render(request, session, "login.html")

    async def login(request: Request) -> Response:
        session, _ = await checked_form(request)
        try:
            session.login = await gateway.start_login()
        except EdgeError as exc:
            return render(request, session, "error.html", status=502, error=_problem(exc))
        return redirect(session.login.authorize_url, session)

    async def callback(request: Request) -> Response:
        session = session_of(request)
        query = request.query_params
        if session is None or session.login is None:
            return redirect("/login")
        start, session.login = session.login, None
        if query.get("state") != start.state:
            raise HTTPException(400, "state does not match this login")
        try:
            issuer = await gateway.issuer()
        except EdgeError as exc:
            return render(request, session, "error.html", status=502, error=_problem(exc))
        if query.get("iss") != issuer:  # RFC 9207: the trust service always sends it
            raise HTTPException(400, "unexpected issuer")
        if query.get("error") or not query.get("code"):
            session.flash("error", "flash.login_failed")
            return redirect("/login", session)
        dpop = DpopSigner()  # this session's key: every token of the login is bound to it
        try:
            grant = await gateway.redeem_code(
                str(query["code"]), start.verifier, dpop, RESOURCES["privacy"]
            )
        except EdgeError:
            session.flash("error", "flash.login_failed")
            return redirect("/login", session)
        if grant.id_token:
            try:
                claims = await run_in_threadpool(id_token_claims, grant.id_token, issuer)
            except jwt.PyJWTError as exc:
                raise HTTPException(400, "the ID token does not verify") from exc
            if claims.get("nonce") != start.nonce:
                raise HTTPException(400, "ID token nonce does not match this login")
        session = store.rotate(session)
        session.dpop, session.refresh_token = dpop, grant.refresh_token
        session.tokens = {"privacy": grant.access}
        return redirect("/results", session)

    async def logout(request: Request) -> Response:
        session, _ = await checked_form(request)
        if session.refresh_token:
            await gateway.revoke(session.refresh_token)
        lang = session.lang
        store.drop(session)
        fresh = store.new(lang)
        fresh.flash("info", "flash.logged_out")
        return redirect("/login", fresh)

    async def language(request: Request) -> Response:
        session, form = await checked_form(request)
        session.lang = pick(str(form.get("lang", "")))
        target = str(form.get("next", "/"))
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        return redirect(target, session)

    # --- results --------------------------------------------------------------------------
    async def results(request: Request, session: Session) -> Response:
        token = await session.token(gateway, "results")
        page = await gateway.json("POST", "/v1/results:search", token, {"page_size": 100})
        items = [_result_view(r) for r in page.get("results", [])]
        items.sort(key=lambda r: r["effective"], reverse=True)
        return render(request, session, "results.html", results=items)

    async def trend(request: Request, session: Session) -> Response:
        code = request.query_params.get("code", "")
        if not SAFE_ID.match(code):
            raise HTTPException(400, "code")
        token = await session.token(gateway, "results")
        page = await gateway.json(
            "POST", "/v1/results:searchSeries", token, {"code": code, "page_size": 200}
        )
        points, unit, low, high, name = [], "", None, None, code
        rows = []
        for p in page.get("points", []):
            obs = p.get("observation", {})
            quantity = obs.get("value_quantity")
            when = obs.get("effective_time")
            if not quantity or not when or "value" not in quantity:
                continue
            time = parse_time(when)
            points.append(Point(time, float(quantity["value"])))
            unit = unit or quantity.get("unit", "")
            name = (obs.get("code") or {}).get("display") or name
            ref = obs.get("reference_range") or {}
            if low is None and (ref.get("low") or {}).get("value") is not None:
                low = float(ref["low"]["value"])
            if high is None and (ref.get("high") or {}).get("value") is not None:
                high = float(ref["high"]["value"])
            rows.append({"time": time, "value": quantity["value"], "unit": quantity.get("unit")})
        t = Translator(session.lang)
        range_text = _range_text(low, high, unit)
        svg = trend_svg(
            points,
            unit,
            low,
            high,
            title=t("trend.svg_title", name=name),
            description=t("trend.svg_desc", count=len(points), range=range_text or "-"),
            range_label=t("trend.reference", range=range_text),
        )
        rows.sort(key=lambda r: r["time"], reverse=True)
        return render(
            request,
            session,
            "trend.html",
            code=code,
            name=name,
            svg=svg,
            rows=rows,
            low=low,
            high=high,
            range_text=range_text,
        )

    # --- documents ------------------------------------------------------------------------
    async def documents(request: Request, session: Session) -> Response:
        token = await session.token(gateway, "documents")
        page = await gateway.json("POST", "/v1/documents:search", token, {"page_size": 100})
        docs = sorted(
            page.get("documents", []), key=lambda d: d.get("creation_time", ""), reverse=True
        )
        return render(request, session, "documents.html", documents=docs)

    async def document_content(request: Request, session: Session) -> Response:
        document_id = request.path_params["document_id"]
        if not SAFE_ID.match(document_id):
            raise HTTPException(404)
        token = await session.token(gateway, "documents")
        meta = await gateway.json("GET", f"/v1/documents/{document_id}", token)
        reply = await gateway.call("GET", f"/v1/documents/{document_id}/content", token)
        if reply.status_code != 200:
            raise EdgeError(reply.status_code, _body(reply))
        title = str(meta.get("title") or document_id)[:80] + _extension(meta)
        plain = re.sub(r"[^A-Za-z0-9._ -]", "_", title)
        return Response(
            reply.content,
            media_type=reply.headers.get("content-type", "application/octet-stream"),
            headers={
                # Always a download (never rendered in the portal's origin); RFC 6266 names.
                "Content-Disposition": f'attachment; filename="{plain}"; '
                f"filename*=UTF-8''{quote(title, safe='')}",
                "Cache-Control": "no-store",
            },
        )

    # --- privacy settings -----------------------------------------------------------------
    async def privacy(request: Request, session: Session) -> Response:
        token = await session.token(gateway, "privacy")
        restrictions = (
            await gateway.json("POST", "/v1/privacy/restrictions:search", token, {"page_size": 100})
        ).get("restrictions", [])
        reservations = (
            await gateway.json("POST", "/v1/privacy/reservations:search", token, {})
        ).get("reservations", [])
        consents = (await gateway.json("POST", "/v1/privacy/consents:search", token, {})).get(
            "consents", []
        )
        blocks = [r for r in restrictions if r.get("kind") != "RESTRICTION_KIND_SHIELD"]
        shields = [r for r in restrictions if r.get("kind") == "RESTRICTION_KIND_SHIELD"]
        return render(
            request,
            session,
            "privacy.html",
            blocks=blocks,
            shields=shields,
            reservations=reservations,
            consents=consents,
            domains=DOMAINS,
            purposes=PURPOSES,
            today=dt.datetime.now(ZONE).date().isoformat(),
        )

    async def create_block(request: Request, session: Session, form: FormData) -> Response:
        kind = str(form.get("target_kind", ""))
        value = str(form.get("target", "")).strip().replace(" ", "")
        level = str(form.get("level", ""))
        domain = str(form.get("domain", ""))
        if kind not in PATTERNS or not PATTERNS[kind].match(value):
            session.flash("error", "flash.bad_target")
            return redirect("/privacy#new-block", session)
        if level not in ("SOFT", "HARD") or domain not in DOMAINS:
            session.flash("error", "flash.bad_input")
            return redirect("/privacy#new-block", session)
        period = _period(form)
        if period is None:
            session.flash("error", "flash.bad_period")
            return redirect("/privacy#new-block", session)
        restriction: dict[str, Any] = {"target": {kind: value}, "level": level}
        if domain:
            restriction["domain"] = domain
        if period:
            restriction["period"] = period
        reason = str(form.get("reason", "")).strip()[:500]
        if reason:
            restriction["reason"] = reason
        token = await session.token(gateway, "privacy")
        await gateway.json("POST", "/v1/privacy/restrictions", token, {"restriction": restriction})
        session.flash("ok", "flash.block_created")
        return redirect("/privacy#blocks", session)

    def lift(kind: str, anchor: str, flash: str) -> Callable[..., Awaitable[Response]]:
        async def handler(request: Request, session: Session, form: FormData) -> Response:
            item = request.path_params["item_id"]
            if not SAFE_ID.match(item):
                raise HTTPException(404)
            token = await session.token(gateway, "privacy")
            await gateway.json("DELETE", f"/v1/privacy/{kind}/{item}", token)
            session.flash("ok", flash)
            return redirect(f"/privacy#{anchor}", session)

        return handler

    async def create_reservation(request: Request, session: Session, form: FormData) -> Response:
        domain = str(form.get("domain", ""))
        period = _period(form)
        if domain not in DOMAINS or period is None:
            session.flash("error", "flash.bad_input")
            return redirect("/privacy#reservations", session)
        body: dict[str, Any] = {}
        if domain:
            body["domain"] = domain
        if period:
            body["period"] = period
        token = await session.token(gateway, "privacy")
        await gateway.json("POST", "/v1/privacy/reservations", token, {"reservation": body})
        session.flash("ok", "flash.reservation_created")
        return redirect("/privacy#reservations", session)

    async def create_consent(request: Request, session: Session, form: FormData) -> Response:
        org = str(form.get("org_number", "")).strip().replace(" ", "")
        purpose = str(form.get("purpose_of_use", ""))
        domain = str(form.get("domain", ""))
        period = _period(form)
        consent: dict[str, Any] = {}
        if org:
            if not PATTERNS["org_number"].match(org):
                session.flash("error", "flash.bad_target")
                return redirect("/privacy#consents", session)
            consent["org_number"] = org
        elif purpose in PURPOSES:
            consent["purpose_of_use"] = purpose
        if not consent or domain not in DOMAINS or period is None:
            session.flash("error", "flash.bad_input")
            return redirect("/privacy#consents", session)
        if domain:
            consent["domain"] = domain
        if period:
            consent["period"] = period
        token = await session.token(gateway, "privacy")
        await gateway.json("POST", "/v1/privacy/consents", token, {"consent": consent})
        session.flash("ok", "flash.consent_created")
        return redirect("/privacy#consents", session)

    # --- who used my data -----------------------------------------------------------------
    async def access_log(request: Request, session: Session) -> Response:
        # Older pages: ?page=N; the opaque page tokens stay in the session, not in URLs.
        number = request.query_params.get("page", "1")
        if not number.isdigit() or not 1 <= int(number) <= len(session.log_pages) + 1:
            return redirect("/access-log", session)
        index = int(number)
        query: dict[str, Any] = {"page_size": LOG_PAGE}
        if index > 1:
            query["page_token"] = session.log_pages[index - 2]
        token = await session.token(gateway, "privacy")
        page = await gateway.json("POST", "/v1/privacy/access-events:search", token, query)
        following = str(page.get("next_page_token") or "")
        del session.log_pages[index - 1 :]
        if following:
            session.log_pages.append(following)
        verified: dict[str, bool] = {}
        consistent: bool | None = None
        head = page.get("tree_head") or {}
        try:
            keys = await gateway.json("GET", "/v1/privacy/access-log/keys", token)
            verified = verified_entries(page, keys)
            consistent = await _consistency(session, head, page, keys, token)
        except EdgeError:
            pass
        events = page.get("access_events", [])
        return render(
            request,
            session,
            "access_log.html",
            events=events,
            verified=verified,
            emergencies=sum(1 for e in events if e.get("emergency")),
            tree_size=head.get("tree_size"),
            page_number=index,
            older=bool(following),
            consistent=consistent,
        )

    async def _consistency(
        session: Session,
        head: dict[str, Any],
        page: dict[str, Any],
        keys: dict[str, Any],
        token: AccessToken,
    ) -> bool | None:
        """Has the log only grown since the head this session saw last? None: no earlier
        head (first visit) or nothing to compare."""
        previous, session.log_head = session.log_head, head or session.log_head
        if not previous or not head:
            return None
        old, new = int(previous.get("tree_size", 0)), int(head.get("tree_size", 0))
        if old == 0 or old == new:
            return grown_consistently(previous, page, keys, {}) if old == new else None
        if old > new:
            return False
        proof = await gateway.json(
            "GET",
            "/v1/privacy/access-log/consistency-proof",
            token,
            params={"first_tree_size": old, "second_tree_size": new},
        )
        return grown_consistently(previous, page, keys, proof)

    # --- acting for someone else ----------------------------------------------------------
    async def representation(request: Request, session: Session) -> Response:
        own = await session.own_token(gateway, "privacy")
        available, powers, supported = [], [], True
        reply = await gateway.call("GET", "/v1/privacy/representations", own)
        if reply.status_code == 200:
            available = _body(reply).get("representations", [])
        elif reply.status_code in (404, 501):
            supported = False
        else:
            raise EdgeError(reply.status_code, _body(reply))
        reply = await gateway.call("GET", "/v1/privacy/powers-of-attorney", own)
        if reply.status_code == 200:
            powers = _body(reply).get("powers_of_attorney", [])
        given = [p for p in powers if p.get("role") != "POWER_OF_ATTORNEY_ROLE_GRANTEE"]
        received = [p for p in powers if p.get("role") == "POWER_OF_ATTORNEY_ROLE_GRANTEE"]
        return render(
            request,
            session,
            "representation.html",
            representations=available,
            given=given,
            received=received,
            supported=supported,
        )

    async def act(request: Request, session: Session, form: FormData) -> Response:
        wanted = str(form.get("representation_id", ""))
        own = await session.own_token(gateway, "privacy")
        listed = _body(await gateway.call("GET", "/v1/privacy/representations", own)).get(
            "representations", []
        )
        chosen = next((r for r in listed if r.get("representation_id") == wanted), None)
        if chosen is None:
            session.flash("error", "flash.bad_input")
            return redirect("/representation", session)
        session.acting = Acting(
            wanted, str(chosen.get("display_name", "")), str(chosen.get("relation", ""))
        )
        try:
            await session.token(gateway, "privacy")  # the exchange, checked now
        except EdgeError:
            session.acting = None
            session.flash("error", "flash.act_refused")
            return redirect("/representation", session)
        session.flash("ok", "flash.acting")
        return redirect("/results", session)

    async def stop_acting(request: Request, session: Session, form: FormData) -> Response:
        session.acting = None
        session.flash("ok", "flash.acting_stopped")
        return redirect("/results", session)

    async def grant_power(request: Request, session: Session, form: FormData) -> Response:
        grantee = str(form.get("grantee_pid", "")).strip().replace(" ", "")
        scope = str(form.get("scope", "FULL"))
        end = _day(str(form.get("valid_until", "")), end=True)
        if not PID.match(grantee):
            session.flash("error", "flash.bad_pid")
            return redirect("/representation#powers", session)
        if end is None or scope not in ("FULL", "LIMITED"):
            session.flash("error", "flash.bad_period")
            return redirect("/representation#powers", session)
        own = await session.own_token(gateway, "privacy")
        # The identity number travels in the JSON body, never in a URL.
        body = {"grantee_id": grantee, "end_time": end, "scope": scope}
        await gateway.json("POST", "/v1/privacy/powers-of-attorney", own, body)
        session.flash("ok", "flash.power_granted")
        return redirect("/representation#powers", session)

    async def revoke_power(request: Request, session: Session, form: FormData) -> Response:
        item = request.path_params["item_id"]
        if not SAFE_ID.match(item):
            raise HTTPException(404)
        own = await session.own_token(gateway, "privacy")
        await gateway.json("DELETE", f"/v1/privacy/powers-of-attorney/{item}", own)
        session.flash("ok", "flash.power_revoked")
        return redirect("/representation#powers", session)

    # --- errors ---------------------------------------------------------------------------
    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        session = session_of(request) or store.new(_accepted(request))
        return render(
            request, session, "error.html", status=status, error={"key": f"error.{status}"}
        )

    routes = [
        Route("/", home),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/auth/callback", callback),
        Route("/logout", logout, methods=["POST"]),
        Route("/language", language, methods=["POST"]),
        Route("/results", logged_in(results)),
        Route("/results/trend", logged_in(trend)),
        Route("/documents", logged_in(documents)),
        Route("/documents/{document_id}/content", logged_in(document_content)),
        Route("/privacy", logged_in(privacy)),
        Route("/privacy/blocks", posted(create_block), methods=["POST"]),
        Route(
            "/privacy/blocks/{item_id}/lift",
            posted(lift("restrictions", "blocks", "flash.block_lifted")),
            methods=["POST"],
        ),
        Route("/privacy/reservations", posted(create_reservation), methods=["POST"]),
        Route(
            "/privacy/reservations/{item_id}/lift",
            posted(lift("reservations", "reservations", "flash.reservation_lifted")),
            methods=["POST"],
        ),
        Route("/privacy/consents", posted(create_consent), methods=["POST"]),
        Route(
            "/privacy/consents/{item_id}/lift",
            posted(lift("consents", "consents", "flash.consent_lifted")),
            methods=["POST"],
        ),
        Route("/access-log", logged_in(access_log)),
        Route("/representation", logged_in(representation)),
        Route("/representation/act", posted(act), methods=["POST"]),
        Route("/representation/stop", posted(stop_acting), methods=["POST"]),
        Route("/representation/powers", posted(grant_power), methods=["POST"]),
        Route("/representation/powers/{item_id}/revoke", posted(revoke_power), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: http_error},
    )
    return SecurityHeaders(app, form_targets=f"'self' {edge_origin}")  # type: ignore[return-value]


class SecurityHeaders:
    """Headers on every answer: a strict CSP (no scripts at all, nothing third-party), no
    framing, no referrer (the callback URL carries the code), no caching of pages."""

    def __init__(self, app: ASGIApp, form_targets: str) -> None:
        self.app = app
        self.csp = (
            "default-src 'none'; style-src 'self'; img-src 'self' data:; "
            f"form-action {form_targets}; frame-ancestors 'none'; base-uri 'none'"
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [
                    (b"content-security-policy", self.csp),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not static and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = headers + extra
            await send(message)

        await self.app(scope, receive, with_headers)


# --- helpers --------------------------------------------------------------------------------
def _accepted(request: Request) -> str:
    header = request.headers.get("accept-language", "").lower()
    return "en" if header.startswith("en") else "nb"


def _body(reply: Any) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _status(exc: EdgeError) -> int:
    return exc.status if 400 <= exc.status < 500 else 502


def _problem(exc: EdgeError) -> dict[str, Any]:
    key = {403: "error.refused", 404: "error.404", 429: "error.busy"}.get(exc.status)
    if key is None:
        key = "error.invalid" if 400 <= exc.status < 500 else "error.unavailable"
    return {"key": key, "reason": exc.reason, "message": str(exc.body.get("message", ""))[:300]}


def _day(value: str, end: bool = False) -> str | None:
    """A date from a form (YYYY-MM-DD) as RFC 3339: its start in Norway, or the next day's
    start for an end date (the period includes the whole last day)."""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return None
    if end:
        day += dt.timedelta(days=1)
    moment = dt.datetime.combine(day, dt.time(), tzinfo=ZONE).astimezone(dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _period(form: FormData) -> dict[str, str] | None:
    """{} for no period, None for a malformed one."""
    start, end = str(form.get("start_date", "")), str(form.get("end_date", ""))
    period: dict[str, str] = {}
    if start:
        if (value := _day(start)) is None:
            return None
        period["start_time"] = value
    if end:
        if (value := _day(end, end=True)) is None:
            return None
        period["end_time"] = value
    if (
        "start_time" in period
        and "end_time" in period
        and period["end_time"] <= period["start_time"]
    ):
        return None
    return period


def _range_text(low: float | None, high: float | None, unit: str) -> str:
    if low is not None and high is not None:
        return f"{low:g}\N{EN DASH}{high:g} {unit}".strip()
    if low is not None:
        return f"> {low:g} {unit}".strip()
    if high is not None:
        return f"< {high:g} {unit}".strip()
    return ""


def _extension(meta: dict[str, Any]) -> str:
    return {
        "application/pdf": ".pdf",
        "text/plain": ".txt",
        "application/xml": ".xml",
        "text/xml": ".xml",
        "application/fhir+json": ".json",
        "application/json": ".json",
    }.get(str(meta.get("content_type", "")), "")


def _result_view(result: dict[str, Any]) -> dict[str, Any]:
    observations = []
    for obs in result.get("observations", []):
        quantity = obs.get("value_quantity")
        ref = obs.get("reference_range") or {}
        low = (ref.get("low") or {}).get("value")
        high = (ref.get("high") or {}).get("value")
        if quantity:
            value = f"{quantity.get('value', '')} {quantity.get('unit', '')}".strip()
        else:
            value = obs.get("value_string") or (obs.get("value_code") or {}).get("display", "")
        code = obs.get("code") or {}
        observations.append(
            {
                "code": code.get("code", ""),
                "name": code.get("display") or code.get("code", ""),
                "value": value,
                "numeric": bool(quantity),
                "range": ref.get("text")
                or _range_text(
                    None if low is None else float(low),
                    None if high is None else float(high),
                    (quantity or {}).get("unit", ""),
                ),
                "interpretation": str(obs.get("interpretation", "")).removeprefix(
                    "INTERPRETATION_"
                ),
                "note": obs.get("note", ""),
            }
        )
    code = result.get("code") or {}
    effective = result.get("effective_time", "")
    return {
        "id": result.get("result_id", ""),
        "name": code.get("display") or code.get("code", ""),
        "category": str(result.get("category", "")).removeprefix("RESULT_CATEGORY_"),
        "status": str(result.get("status", "")).removeprefix("RESULT_STATUS_"),
        "effective": parse_time(effective) if effective else dt.datetime.min.replace(tzinfo=dt.UTC),
        "issued": result.get("issued_time", ""),
        "available_from": result.get("restrict_until", ""),
        "delayed": result.get("confidentiality_code") == "NORU"
        or bool(result.get("restrict_until")),
        "conclusion": result.get("conclusion", ""),
        "observations": observations,
    }
