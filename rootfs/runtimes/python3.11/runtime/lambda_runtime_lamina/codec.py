"""JSON for events, results and error bodies, as Lambda's Python runtime does it.

awslambdaric encodes with simplejson (use_decimal=False, allow_nan=True, plus a
default() that writes a Decimal's digits as they are and a NaN Decimal as NaN;
ensure_ascii=False only on python3.12 and later). This is the same output with
the stdlib encoder:
- Decimal -> its str() as a bare JSON number (1.10 stays 1.10), NaN -> NaN;
- bytes inside a result -> decoded as UTF-8 (simplejson's encoding='utf-8');
- objects with a callable _asdict() -> that dict (simplejson's
  namedtuple_as_object), except namedtuples themselves, which the stdlib
  encoder writes as arrays before any hook runs (the one known difference).
"""

import json
import math
import os
import re
import sys

_NON_ASCII_ENVS = {
    "AWS_Lambda_python3.12",
    "AWS_Lambda_python3.13",
    "AWS_Lambda_python3.14",
    "AWS_Lambda_python3.15",
}
_ENSURE_ASCII = os.environ.get("AWS_EXECUTION_ENV") not in _NON_ASCII_ENVS

# A Decimal is first encoded as a string holding a NUL, this process's random tag
# and an index; the string (which JSON always writes as "\u0000<tag><i>") is then
# replaced by the Decimal's text. No other value can produce the tag.
_RAW_TAG = "lamina-raw-%s-" % os.urandom(8).hex()
_RAW_RE = re.compile(re.escape('"\\u0000' + _RAW_TAG) + r'(\d+)"')


class FaultException(Exception):
    MARSHAL_ERROR = "Runtime.MarshalError"
    UNMARSHAL_ERROR = "Runtime.UnmarshalError"
    USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
    HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
    IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
    BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
    MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
    LAMBDA_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"
    LAMBDA_RUNTIME_CLIENT_ERROR = "Runtime.LambdaRuntimeClientError"

    def __init__(self, exception_type, msg, trace=None):
        super().__init__(msg)
        self.msg = msg
        self.exception_type = exception_type
        self.trace = trace


class _Encoder(json.JSONEncoder):
    def __init__(self, raw):
        super().__init__(ensure_ascii=_ENSURE_ASCII, allow_nan=True)
        self._raw = raw

    def default(self, o):
        decimal = sys.modules.get("decimal")  # no Decimal exists unless imported
        if decimal is not None and isinstance(o, decimal.Decimal):
            if o.is_nan():
                return math.nan
            self._raw.append(str(o))
            return "\x00%s%d" % (_RAW_TAG, len(self._raw) - 1)
        if isinstance(o, bytes):
            return o.decode("utf-8")
        asdict = getattr(o, "_asdict", None)
        if asdict is not None and callable(asdict):
            d = asdict()
            if not isinstance(d, dict):
                raise TypeError("_asdict() must return a dict, not %s" % type(d).__name__)
            return d
        return super().default(o)


def to_json(obj):
    raw = []
    text = _Encoder(raw).encode(obj)
    if raw:
        text = _RAW_RE.sub(lambda m: raw[int(m.group(1))], text)
    return text


def unmarshal_event(body, content_type):
    """The handler's event: JSON-decoded only for exactly application/json."""
    if content_type != "application/json":
        return body
    try:
        return json.loads(body)
    except Exception as e:
        raise FaultException(
            FaultException.UNMARSHAL_ERROR, "Unable to unmarshal input: {}".format(e)
        )


def marshal_result(result):
    """(text or bytes, content type) of a handler's return value."""
    if isinstance(result, bytes):
        return result, "application/unknown"
    try:
        return to_json(result), "application/json"
    except Exception as e:
        raise FaultException(
            FaultException.MARSHAL_ERROR, "Unable to marshal response: {}".format(e)
        )
