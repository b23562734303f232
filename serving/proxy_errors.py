"""The JSON answers nginx gives for itself and in place of TorchServe's own errors
(handlers/contract.py's {"error", "message"}), as nginx locations and error_page lines for
serving/nginx.conf.template: what serving/proxy.py renders around them."""
from __future__ import annotations

import json

from serving.api_keys import ApiKeys
from settings.limits import LIMITS
from settings.model_serving import SERVING
from settings.proxy import ProxyLimits

# The JSON error answers nginx gives itself (handlers/contract.py's {"error", "message"}).
ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is not valid HTTP/1.1 (a TLS or HTTP/2 client speaking to a plain HTTP port?). "
                         "Send a plain HTTP request."),
    403: ("forbidden", "Nothing is served at this path. The page is at /; POST images to /predictions/<model>."),
    404: ("not_found", "Nothing is served at this path. POST an image to /predictions/<model> (models: {models}); "
                       "GET /ping tells whether the server is alive."),
    405: ("method_not_allowed", "This path does not accept that method: /predictions/<model> and /explanations/<model> "
                                "take POST or PUT with the image as the body, /ping takes GET."),
    408: ("request_timeout", "The request (headers or body) was not sent within {timeout} s. Send it whole, at once."),
    411: ("length_required", "Send the body with a Content-Length header or chunked encoding."),
    413: ("request_too_large", "The body is larger than {max_bytes:,} bytes. Downscale the image, or split the "
                              "images over several requests."),
    412: ("precondition_failed", "The file changed since the version your If-Match or If-Unmodified-Since "
                                 "header names; GET it again without that header."),
    414: ("uri_too_long", "The URL is too long: the request line must fit in {line_bytes:,} bytes."),
    416: ("range_not_satisfiable", "The Range header asks for bytes the file does not have; GET it without Range."),
    429: ("rate_limited", "This API key sent more requests than its rate allows; retry after the time in "
                          "Retry-After, or ask for a key with a higher rate."),
    431: ("headers_too_large", "A request header line is longer than {line_bytes:,} bytes."),
    494: ("headers_too_large", "A request header line is longer than {line_bytes:,} bytes."),
    501: ("not_implemented", "This server takes bodies with Content-Length or Transfer-Encoding: chunked only; "
                             "send the body with one of those."),
    505: ("http_version_not_supported", "This port speaks HTTP/1.1 (and 1.0), not HTTP/2 or later."),
    # nginx's own code for plain HTTP sent to a TLS port, answered as a 400
    497: ("plain_http_to_https_port", "This port speaks HTTPS: use https:// (and trust the CA that signed "
                                      "its certificate, e.g. curl --cacert ca.pem)."),
}
ANSWERED_AS = {497: 400}
# TorchServe's own non-handler errors, replaced (the handler never answers these codes itself).
BACKEND_ERRORS: dict[int, tuple[str, str]] = {
    404: ("unknown_model", "No such model (or version) is served here; the models are {models}. "
                           "POST an image to /predictions/<model>."),
    500: ("internal_error", "The server failed on this request; see its log (request id in the X-Request-ID header)."),
    502: ("backend_unavailable", "The model server is not answering (starting or restarting). Retry in a few seconds."),
    503: ("overloaded", "The model queue is full or it has no live worker right now. Retry in a second or two."),
    504: ("timeout", "The model did not answer in time. Retry; if it persists, the server is overloaded."),
    507: ("worker_died", "The worker serving this request died; TorchServe restarts it. Retry in a few seconds."),
}
# API keys (serving/api_keys.py): no valid key, or one for other models.
NO_KEY = ("unauthorized", "This server needs an API key: send the header Authorization: Bearer <key>. "
                          "A missing and a wrong key get this same answer.")
OTHER_MODEL = ("forbidden_model", "This API key may not call this model; use a key made for it.")
# A Content-Type with control characters or bytes over 0x7E: Netty would refuse it in its own words.
BAD_CONTENT_TYPE = ("bad_content_type", "The Content-Type header holds characters outside printable ASCII. "
                                        "Send e.g. Content-Type: image/png.")
# A 500 from TorchServe for a multipart body is Netty's form decoder failing on what the client sent
# (a part without Content-Disposition, a boundary that does not match): the client's to fix.
MULTIPART_500 = ("bad_multipart", "The multipart/form-data body could not be parsed: every part needs a "
                                  "Content-Disposition header and the boundary must match the one in the "
                                  "Content-Type header. Or send the image bytes as the whole body with "
                                  "Content-Type image/png or image/jpeg.")

ERROR_URI = "/_errors/"  # nginx's own error answers: internal locations, unreachable from outside


def json_body(code: str, message: str) -> str:
    """A JSON body for nginx's `return`: nginx strings take ' quotes, so none may appear inside."""
    body = json.dumps({"error": code, "message": message}, separators=(",", ":"))
    if "'" in body or "$" in body:
        raise ValueError(f"an nginx return string cannot hold ' or $: {body}")
    return body


def location(name: str, status: int, code: str, message: str, extra: str = "") -> str:
    """A location answering `status` with the JSON error: @b<status> (named) for TorchServe's,
    = /_errors/<status> (internal) for nginx's own, because a request line too broken to have a URI
    (a TLS hello, an HTTP/2 preface) cannot be redirected to a named location. X-Request-ID repeated:
    an add_header at this level hides the server's."""
    lines = ["add_header X-Request-ID $rid always;"]
    if status == 405:
        lines.append('add_header Allow "POST, PUT, GET, HEAD" always;')
    if status in (429, 502, 503, 507):
        lines.append("add_header Retry-After 1 always;")
    where = f"= {name}" if name.startswith("/") else f"@{name}"
    if name.startswith("/"):
        lines.insert(0, "internal;")
    if extra:
        lines.append(extra)
    lines.append(f"return {ANSWERED_AS.get(status, status)} '{json_body(code, message)}';")
    return "\n".join([f"location {where} {{", *(f"    {line}" for line in lines), "}"])


def error_locations(limits: ProxyLimits) -> str:
    """/_errors/<status>: nginx's own errors; @b<status>: TorchServe's, replaced (the models named are ours,
    settings/model_serving.py; a store with more serves them too, TorchServe says which exist)."""
    models = ", ".join(SERVING)
    blocks = [location(f"{ERROR_URI}{status}", status, code, message.format(
        models=models, timeout=limits.read_timeout_s, max_bytes=LIMITS.max_request_bytes,
        line_bytes=limits.header_line_bytes))
        for status, (code, message) in ERRORS.items()]
    multipart = f"if ($content_type ~* \"^multipart/\") {{ return 400 '{json_body(*MULTIPART_500)}'; }}"
    blocks += [location(f"b{status}", status, code, message.format(models=models),
                         multipart if status == 500 else "")
               for status, (code, message) in BACKEND_ERRORS.items()]
    return "\n".join(blocks)


def error_pages(statuses, kind: str) -> str:
    """error_page lines: kind "e" (nginx's own: internal URIs), "b" (TorchServe's: named locations)."""
    target = (lambda status: f"{ERROR_URI}{status}") if kind == "e" else (lambda status: f"= @b{status}")
    return "\n".join(f"error_page {status} {target(status)};" for status in statuses)


def key_checks(keys: ApiKeys | None) -> str:
    """The model routes' answers to a request without a valid key (401) or with another model's (403)."""
    if keys is None:
        return ""
    return "\n".join([
        'if ($api_key_name = "") {',
        "    add_header X-Request-ID $rid always;",
        "    add_header WWW-Authenticate 'Bearer realm=\"tinyserve\"' always;",
        f"    return 401 '{json_body(*NO_KEY)}';",
        "}",
        'if ($api_key_allowed = "") {',
        "    add_header X-Request-ID $rid always;",
        f"    return 403 '{json_body(*OTHER_MODEL)}';",
        "}",
    ])
