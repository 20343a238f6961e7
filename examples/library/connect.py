"""pdauth as a library: connect a PagerDuty account, then call PagerDuty through it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pdauth import Connection, Connector, Settings


async def connect_and_list_incidents(
    owner: str, send_user_to: Callable[[str], Awaitable[str]]
) -> tuple[Connection, list[str]]:
    # migrate=True creates or upgrades the schema (a new SQLite file works as is); without it
    # an unmigrated database is a ConfigurationError that says to run `pdauth db upgrade`.
    async with Connector(Settings.from_env(), migrate=True) as connector:
        start = await connector.begin(owner, return_to="/settings")
        # A web app redirects the browser to start.url and keeps start.binding in an HttpOnly
        # cookie; PagerDuty sends the browser back to PDAUTH_REDIRECT_URI with ?code=…&state=…
        callback_query = await send_user_to(start.url)
        connection = await connector.complete(callback_query, start.binding)
        async with await connector.client(connection) as pd:  # paced, retried, refreshed
            titles = [incident["title"] async for incident in pd.iter_all("/incidents")]
        return connection, titles
