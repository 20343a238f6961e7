"""pdauth inside a host web framework: one module per framework (``starlette``, ``fastapi``,
``django``, ``flask``), each imported on its own so a host loads only its framework."""
