#!/usr/bin/env python3
"""Writes the seed corpora under corpus/<target>/ (run from anywhere).

Each seed is the target's control bytes (see the header comment of
fuzz_targets/<target>.rs) followed by a representative valid or invalid input.
Re-running rewrites the seeds and leaves libFuzzer's own entries alone.
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = 0x00  # control byte below 0x80: the production default limit


def frac(f):
    """A split point at this fraction of the input."""
    return round(f * 255)


def small(n):
    """A control byte for a tiny limit: 1 + 4*k for max_header, 4*k for max_body."""
    return 0x80 | n


HEAD = {
    # Valid requests.
    "get-host": b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "post-length": b"POST /submit?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 5\r\n\r\nhello",
    "post-chunked-ext-trailer": b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=v\r\nhello\r\n6;q=\"a\\\"b\"\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    "absolute-form-fold-10": b"GET http://h:81/abs?q#f HTTP/1.0\r\nConnection: keep-alive\r\n"
    b"X-Folded: a\r\n b\r\n\tc\r\n\r\n",
    "options-star-expect": b"OPTIONS * HTTP/1.1\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    "head-request": b"HEAD /index.html HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
    "connect-authority": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    "http09-leading-crlf-dups": b"\r\n\r\nGET /x\r\nX-Dup: 1\r\nx-dup: 2\r\nX-Dup:\r\n\r\n",
    "both-framings-close-after": b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-empty-items": b"POST / HTTP/1.1\r\nTransfer-Encoding: , chunked,\r\n\r\n0\r\n\r\n",
    "underscore-dropped-obs-text": b"GET //caf\xe9?a#b HTTP/1.1\r\nX: \xa0v\x85\r\nX_Y: dropped\r\n"
    b"Connection: Keep-Alive, Upgrade\r\n\r\n",
    "version-20": b"DELETE /r HTTP/2.0\r\nConnection: keep-alive\r\nContent-Length: 00\r\n\r\n",
    "many-headers": b"GET /m HTTP/1.1\r\n"
    + b"".join(b"H%d: v%d\r\n" % (i, i) for i in range(24))
    + b"h3: again\r\n\r\n",
    "pipelined": b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
    "blank-lines-skip": b" \r\n\t\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "tab-in-value-and-tokens": b"PATCH /p HTTP/1.1\r\nX-T:\ta\tb\t\r\n!#$%&'*+-.^`|~: tok\r\n\r\n",
    # Invalid requests.
    "lowercase-method": b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
    "bare-lf-request-line": b"GET /\nx HTTP/1.1\r\nHost: h\r\n\r\n",
    "bare-cr-header": b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    "leading-fold": b"GET / HTTP/1.1\r\n X: a\r\n\r\n",
    "duplicate-host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "duplicate-content-length": b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx",
    "te-gzip-chunked": b"POST /q HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "te-chunked-twice": b"POST /q HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te-in-http10": b"POST /q HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "content-length-plus": b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
    "content-length-list": b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nHost\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    "bad-uri": b"GET /caf\xe9 HTTP/1.1\r\n\r\n",
    "bad-version": b"GET / HTTP/1.x\r\n\r\n",
    "incomplete": b"GET / HTTP/1.1\r\nHost: exa",
    "binary": bytes(range(256)),
}

# Control bytes by name: (max_header, max_body, cut a, cut b).
HEAD_CONTROL = {
    "content-length-413": (DEFAULT, small(2), frac(0.5), frac(0.9)),
    "header-431": (small(8), DEFAULT, frac(0.2), frac(0.6)),
    "incomplete-431": (small(2), DEFAULT, frac(0.1), frac(0.5)),
}
HEAD["content-length-413"] = b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n123456789"
HEAD["header-431"] = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"v" * 40 + b"\r\n\r\n"
HEAD["incomplete-431"] = b"GET /a-head-that-never-ends HTTP/1.1\r\nX: "

CHUNKED = {
    # Valid bodies (then the next request's bytes, which must stay unconsumed).
    "one-chunk": b"5\r\nhello\r\n0\r\n\r\n",
    "chunks-next-request": b"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "hex-case-leading-zeros": b"000a\r\n0123456789\r\nF\r\n0123456789abcde\r\n00\r\n\r\n",
    "extensions": b"4;a\r\nabcd\r\n3;b=tok;c=\"q\\\"x\"\r\nxyz\r\n0;last=1\r\n\r\n",
    "trailers": b"2\r\nhi\r\n0\r\nX-Trailer: v\r\nY: w\r\n\r\nNEXT",
    "empty-size-line-skipped": b"\r\n2\r\nhi\r\n\r\n0\r\n\r\n",
    "binary-data": b"8\r\n\r\n\x00\xff0\r\n\r\r\n0\r\n\r\n",
    "empty-body": b"0\r\n\r\n",
    # Invalid bodies.
    "bad-size": b"g\r\nhello\r\n0\r\n\r\n",
    "size-then-space": b"5 \r\nhello\r\n0\r\n\r\n",
    "missing-data-crlf": b"3\r\nabcX\r\n0\r\n\r\n",
    "bad-extension-space": b"3; a=b\r\nabc\r\n0\r\n\r\n",
    "bad-extension-empty-name": b"3;=b\r\nabc\r\n0\r\n\r\n",
    "unterminated-quote": b"3;a=\"b\r\nabc\r\n0\r\n\r\n",
    "huge-size": b"ffffffffffffffffffffffff\r\nabc",
    "bare-lf-size": b"3\nabc\r\n0\r\n\r\n",
    "negative-size": b"-1\r\nx\r\n0\r\n\r\n",
    "incomplete": b"10\r\nonly part of it",
    "trailer-unterminated": b"0\r\nX: y\r\n",
}
CHUNKED_CONTROL = {
    "limit-413": (small(4), frac(0.3), frac(0.6)),
    "limit-zero": (small(0), frac(0.5), frac(0.5)),
}
CHUNKED["limit-413"] = b"8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n"
CHUNKED["limit-zero"] = b"1\r\nx\r\n0\r\n\r\n"


def write(target, seeds, control, default):
    out = HERE / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    for name, wire in seeds.items():
        ctl = bytes(control.get(name, default))
        (out / name).write_bytes(ctl + wire)


write("head_parser", HEAD, HEAD_CONTROL, (DEFAULT, DEFAULT, frac(0.25), frac(0.6)))
write("chunked_decoder", CHUNKED, CHUNKED_CONTROL, (DEFAULT, frac(0.4), frac(0.7)))
