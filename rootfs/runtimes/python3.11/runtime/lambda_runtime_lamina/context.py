"""The context object handed to handlers, with Lambda's Python attributes.

As on Lambda: `memory_limit_in_mb` is the env var's string, `identity` is always
a CognitoIdentity (its fields None without the Cognito header), `client_context`
is None unless the invoke carried one (then `.client` is None or a Client), and
the client context's "w3c" member is taken out and served by `w3c()`.
"""

import logging
import os
import sys
import time

_W3C_FIELDS = ("traceparent", "tracestate", "baggage")


def _slots_repr(obj, names):
    inner = ",".join("%s=%s" % (n, getattr(obj, n)) for n in names)
    return "%s([%s])" % (obj.__class__.__name__, inner)


class CognitoIdentity(object):
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __repr__(self):
        return _slots_repr(self, self.__slots__)


class Client(object):
    __slots__ = [
        "installation_id",
        "app_title",
        "app_version_name",
        "app_version_code",
        "app_package_name",
    ]

    def __repr__(self):
        return _slots_repr(self, self.__slots__)


class ClientContext(object):
    __slots__ = ["custom", "env", "client"]

    def __repr__(self):
        return _slots_repr(self, self.__slots__)


def _from_dict(cls, values):
    """An instance of cls with every slot taken from values (None when absent)."""
    if values is None:
        return None
    obj = cls()
    for name in cls.__slots__:
        setattr(obj, name, values.get(name))
    return obj


class LambdaContext(object):
    def __init__(
        self,
        invoke_id,
        client_context,
        cognito_identity,
        epoch_deadline_time_in_ms,
        invoked_function_arn=None,
        tenant_id=None,
    ):
        env = os.environ
        self.aws_request_id = invoke_id
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id

        self._w3c_fields = {}
        if isinstance(client_context, dict) and "w3c" in client_context:
            raw = client_context.pop("w3c")
            if isinstance(raw, dict):
                self._w3c_fields = {
                    k: raw[k] for k in _W3C_FIELDS if isinstance(raw.get(k), str)
                }

        self.client_context = _from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _from_dict(Client, self.client_context.client)

        self.identity = _from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get(
                "cognitoIdentityPoolId"
            )

        self._epoch_deadline_time_in_ms = epoch_deadline_time_in_ms

    def get_remaining_time_in_millis(self):
        remaining = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def w3c(self):
        """The W3C trace context (traceparent, tracestate, baggage) of this invoke."""
        return dict(self._w3c_fields)

    def log(self, msg):
        for handler in logging.getLogger().handlers:
            sink = getattr(handler, "log_sink", None)
            if sink is not None:
                sink.log(str(msg))
                return
        sys.stdout.write(str(msg))

    def __repr__(self):
        return _slots_repr(
            self,
            [
                "aws_request_id",
                "log_group_name",
                "log_stream_name",
                "function_name",
                "memory_limit_in_mb",
                "function_version",
                "invoked_function_arn",
                "client_context",
                "identity",
                "tenant_id",
            ],
        )
