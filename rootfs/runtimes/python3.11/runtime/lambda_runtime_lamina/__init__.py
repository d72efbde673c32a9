"""lamina's runtime interface client for Python functions (stdlib only).

Behaves like AWS's awslambdaric as used by Lambda's managed python3.x runtimes:
handler loading and its init errors, the Runtime API loop, the context object,
JSON (un)marshalling, error bodies and the text/JSON log formats.

Modules: runtime (sys.path, handler, loop, errors), rapid (Runtime API client),
codec (JSON and FaultException), context (the context object), logs (log sinks,
formatters, error log lines).
"""
