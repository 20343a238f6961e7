"""``RedisPacer``: one rate-limit budget per credential shared by processes and machines.

PagerDuty counts requests per credential, not per process: two workers that each pace
themselves perfectly still overshoot together. This pacer keeps the state of
:class:`~pdauth.client.pacing.PacingState` in Redis (``PDAUTH_REDIS_URL``) and runs the same
rules, rule for rule, as small Lua scripts. Why Lua rather than a lock library or
``WATCH``/``MULTI``: admission is a read-modify-write of several fields (budget ceiling, last
sequence number, window bounds, spacing slot, in-flight set) that must be atomic across
processes, and one ``EVALSHA`` is atomic and one round trip; a distributed lock would take
three round trips per request and can expire mid-update, optimistic ``WATCH`` retries storm
under exactly the contention pacing exists for.

Time comes from the Redis server (``TIME``) so that machines with different clocks share one
time base; pass a ``clock`` to use its wall-clock ``now()`` instead (tests). In-flight entries
of a process that died expire after ``inflight_ttl`` seconds. Every key begins with ``prefix``
(default ``pdauth:``; the Connector passes ``PDAUTH_REDIS_PREFIX`` + ``pace:``).

Redis is a help, never a dependency of a call: when it cannot be reached (or answers too
slowly), the process paces locally with a :class:`~pdauth.client.pacer.LocalPacer`, logs ONE
warning for the outage, tells the ``on_outage`` observer (a metric hook), and probes Redis
again with exponential backoff; the first successful probe brings shared pacing back. A call
whose ticket came from Redis still completes if Redis dies while it is in flight (its in-flight
entry expires there).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.lowlevel import RunVar

from pdauth.client.pacer import POLL_INTERVAL, LocalPacer, SleepFn, concurrency_limiter
from pdauth.client.pacing import (
    FRACTIONAL_RESET_SLACK,
    INTEGER_RESET_SLACK,
    MAX_CALIBRATION_BRACKET,
    MAX_EXTRA_RESERVE,
    MAX_MARGIN,
    MIN_MARGIN,
    MIN_WAIT,
    RateLimitHeaders,
    Ticket,
)
from pdauth.clock import Clock
from pdauth.errors import ConfigurationError, DeadlineExceededError

__all__ = [
    "ACQUIRE_LUA",
    "BLOCK_LUA",
    "FORGET_LUA",
    "OBSERVE_LUA",
    "REDIS_TIMEOUT",
    "RedisPacer",
    "script_keys",
]

#: Seconds a Redis command or connect may take before pdauth treats Redis as down (the shared
#: pacer, request limits and connect links all fall back or answer 503 within it).
REDIS_TIMEOUT = 1.0

_log = logging.getLogger("pdauth.client")

# Shared prologue: read the state hash into locals (absent field = unknown / infinite).
_PROLOGUE = """
local S, F, E = KEYS[1], KEYS[2], KEYS[3]
local function num(v, d) if v then return tonumber(v) end return d end
local function fmt(x) return string.format('%.6f', x) end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local h = redis.call('HMGET', S, 'limit', 'ceiling', 'last_seq', 'lo', 'hi', 'offset', 'margin',
  'next_slot', 'blocked_until', 'headerless', 'extra', 'probe', 'window_last_send',
  'calibrated', 'integral', 'early_probed', 'early_failed')
local limit, ceiling, last = num(h[1], nil), num(h[2], 0), num(h[3], 0)
local lo, hi = num(h[4], nil), num(h[5], nil)
local offset, margin = num(h[6], 0), num(h[7], 0.05)
local next_slot, blocked = num(h[8], nil), num(h[9], nil)
local headerless, extra, probe = h[10] == '1', num(h[11], 0), num(h[12], nil)
local wls = num(h[13], nil)
local calibrated, integral, early_probed = h[14] == '1', h[15] == '1', h[16] == '1'
local early_failed = h[17] == '1'
local function touch()
  for _, k in ipairs({S, F, E}) do redis.call('EXPIRE', k, 86400) end
end
"""

#: ARGV: now ('' = Redis TIME), inflight_ttl. Returns {1, seq, sent_at, probe} or {0, wait}
#: (wait '-1' = until some answer arrives).
ACQUIRE_LUA = (
    _PROLOGUE
    + f"local MIN_WAIT, INTEGER_SLACK = {MIN_WAIT!r}, {INTEGER_RESET_SLACK!r}\n"
    + """
local ttl = tonumber(ARGV[2])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', E, '-inf', now)) do
  redis.call('ZREM', F, m)
  redis.call('ZREM', E, m)
  if probe and tonumber(m) == probe then probe = nil; redis.call('HDEL', S, 'probe') end
end
local function admit(is_probe)
  last = last + 1
  redis.call('ZADD', F, last, last)
  redis.call('ZADD', E, now + ttl, last)
  redis.call('HSET', S, 'last_seq', last)
  if is_probe then redis.call('HSET', S, 'probe', last) end
  touch()
  return {1, last, fmt(now), is_probe and 1 or 0}
end
local function wait(s)
  if s == nil then return {0, '-1'} end
  return {0, fmt(s)}
end
local function estimated_end()
  local e = hi + offset + margin
  if e > hi then e = hi end
  if lo and e < lo then e = lo end
  return e
end
if blocked and blocked - now > MIN_WAIT then return wait(blocked - now) end
if not limit then
  if headerless then return admit(false) end
  if probe then return wait(nil) end
  return admit(true)
end
local avail = ceiling - last - extra
local early = nil  -- see PacingState._early_probe_time
if hi and integral and not calibrated and not early_probed and not early_failed then
  early = hi - INTEGER_SLACK
  if lo and early < lo then early = lo end
  early = early + margin
end
if early and avail >= 1 and not probe and early - now <= MIN_WAIT then
  redis.call('HSET', S, 'early_probed', 1)
  return admit(true)
end
if avail >= 2 then
  if next_slot and next_slot - now > MIN_WAIT then
    if early and early - now > MIN_WAIT and early < next_slot then return wait(early - now) end
    return wait(next_slot - now)
  end
  local spare = avail - 1
  local r = admit(false)
  local gap = 0
  if hi then
    local e = estimated_end()  -- see PacingState._spread_end
    if early and early - margin < e then e = early - margin end
    if e > now then gap = (e - now) / spare end
  end
  redis.call('HSET', S, 'next_slot', fmt(now + gap))
  return r
end
if probe then return wait(nil) end
if not hi then return wait(nil) end
if avail == 1 then
  local e = estimated_end()
  if early and early < e then e = early end
  if e - now > MIN_WAIT then return wait(e - now) end
  return admit(true)
end
if hi - now > MIN_WAIT then return wait(hi - now) end
return admit(true)
"""
)

#: ARGV: now, seq, sent_at, probe(0/1), status, has_headers(0/1), limit, remaining, reset,
#: reset_is_integer(0/1). Mirrors PacingState.observe.
OBSERVE_LUA = (
    _PROLOGUE
    + f"""
local seq, sent = tonumber(ARGV[2]), tonumber(ARGV[3])
local is_probe, status = ARGV[4] == '1', tonumber(ARGV[5])
local older = redis.call('ZCOUNT', F, '-inf', '(' .. seq)
redis.call('ZREM', F, seq)
redis.call('ZREM', E, seq)
if probe == seq then redis.call('HDEL', S, 'probe') end
if ARGV[6] ~= '1' then
  if (not limit) and status >= 200 and status < 300 then redis.call('HSET', S, 'headerless', 1) end
  return 0
end
local first = not limit
local remaining, reset = tonumber(ARGV[8]), tonumber(ARGV[9])
local slack = {FRACTIONAL_RESET_SLACK!r}
if ARGV[10] == '1' then slack = {INTEGER_RESET_SLACK!r} end
local obs_lo, obs_hi = sent + reset - slack, now + reset + slack
local obs_ceiling = remaining + seq - older
redis.call('HSET', S, 'limit', ARGV[7], 'headerless', 0, 'integral', ARGV[10])
if status == 429 and (not first) and seq <= ceiling - extra then
  redis.call('HSET', S, 'extra', math.min({MAX_EXTRA_RESERVE}, extra + 1))
end
touch()
if first or obs_lo > hi or sent >= hi then
  if (not first) and wls then
    local bracket = now - wls
    if bracket >= 0 and bracket <= {MAX_CALIBRATION_BRACKET!r} and sent < hi then
      local middle = (now + wls) / 2
      local off = math.min(0, math.max(-{INTEGER_RESET_SLACK!r}, middle - hi))
      local mar = math.min({MAX_MARGIN!r}, math.max({MIN_MARGIN!r}, bracket))
      redis.call('HSET', S, 'offset', fmt(off), 'margin', fmt(mar), 'calibrated', 1)
    end
  end
  redis.call('HSET', S, 'ceiling', obs_ceiling, 'lo', fmt(obs_lo), 'hi', fmt(obs_hi),
    'window_last_send', fmt(sent), 'early_probed', 0)
  redis.call('HDEL', S, 'next_slot')
  return 1
end
if obs_hi < lo then return 0 end
if is_probe and early_probed and not calibrated then redis.call('HSET', S, 'early_failed', 1) end
if is_probe and remaining == 0 and calibrated then
  redis.call('HSET', S, 'margin', fmt(math.min({MAX_MARGIN!r}, 2 * margin)))
end
redis.call('HSET', S, 'lo', fmt(math.max(lo, obs_lo)), 'hi', fmt(math.min(hi, obs_hi)),
  'ceiling', math.min(ceiling, obs_ceiling), 'window_last_send', fmt(math.max(wls or sent, sent)))
return 0
"""
)

#: ARGV: now (unused), seq. The request got no answer; its budget stays spent.
FORGET_LUA = (
    _PROLOGUE
    + """
local seq = tonumber(ARGV[2])
redis.call('ZREM', F, seq)
redis.call('ZREM', E, seq)
if probe == seq then redis.call('HDEL', S, 'probe') end
return 0
"""
)

#: ARGV: now, seconds. Nothing may be sent before now + seconds.
BLOCK_LUA = (
    _PROLOGUE
    + """
local until_ = now + tonumber(ARGV[2])
if (not blocked) or until_ > blocked then redis.call('HSET', S, 'blocked_until', fmt(until_)) end
touch()
return 0
"""
)


def script_keys(prefix: str, key: str) -> list[str]:
    """The three Redis keys of one credential: state hash, in-flight set, in-flight expiry.

    A hash tag keeps them in one Redis Cluster slot, as a multi-key script requires.
    """
    base = f"{prefix}{{{key}}}"
    return [base, f"{base}:inflight", f"{base}:expiry"]


def observe_args(
    now: str, ticket: Ticket, status: int, headers: RateLimitHeaders | None
) -> list[Any]:
    """ARGV for :data:`OBSERVE_LUA`."""
    if headers is None:
        rl: list[Any] = [0, 0, 0, 0, 0]
    else:
        integral = 1 if headers.reset.is_integer() else 0
        rl = [1, headers.limit, headers.remaining, repr(headers.reset), integral]
    return [now, ticket.seq, repr(ticket.sent_at), int(ticket.probe), status, *rl]


def parse_acquire(reply: Any) -> Ticket | float:
    """A :data:`ACQUIRE_LUA` reply as a Ticket, or seconds to wait (inf: until an answer)."""
    if int(reply[0]) == 1:
        return Ticket(seq=int(reply[1]), sent_at=float(reply[2]), probe=bool(int(reply[3])))
    wait = float(reply[1])
    return float("inf") if wait < 0 else wait


@dataclass
class _LoopLocal:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    changed: anyio.Event = field(default_factory=anyio.Event)
    redis: Any = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


def _outage_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    # Any Redis error (connection refused or lost, timeout, a server that is loading or
    # read-only) means "pace locally for now"; OSError covers sockets failing below redis-py.
    return (redis.exceptions.RedisError, OSError)


class RedisPacer:
    """Header-driven pacing whose state lives in Redis, shared by every process using it.

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL (``PDAUTH_REDIS_URL``);
    every key begins with ``prefix``. Within one process waiters for a
    key still queue fairly and only the head polls Redis. ``timeout`` bounds each Redis command
    (a hung Redis must not hang calls); ``probe_backoff`` is the first and the longest wait
    between probes while Redis is out; ``on_outage(True)`` / ``on_outage(False)`` is called when
    an outage starts / ends (for a metric). Call :meth:`aclose` (on each event loop that used
    the pacer) to close its connections.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pdauth:",
        clock: Clock | None = None,
        sleep: SleepFn | None = None,
        inflight_ttl: float = 120.0,
        timeout: float = REDIS_TIMEOUT,
        probe_backoff: tuple[float, float] = (1.0, 30.0),
        on_outage: Callable[[bool], None] | None = None,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401 - optional dependency, checked early
        except ImportError:
            raise ConfigurationError(
                "PDAUTH_REDIS_URL needs the redis package: pip install 'pdauth[redis]'"
            ) from None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                "PDAUTH_REDIS_URL must be a redis://, rediss:// or unix:// URL"
            )
        if not (timeout > 0 and 0 < probe_backoff[0] <= probe_backoff[1]):
            raise ValueError("timeout and probe_backoff must be positive (first <= longest)")
        self._url = url
        self._prefix = prefix
        self._clock = clock
        self._sleep = sleep
        self._ttl = inflight_ttl
        self._timeout = timeout
        self._local: RunVar[dict[str, _LoopLocal]] = RunVar(f"pdauth-redis-pacer-{id(self)}")
        # In-flight tickets by id (the ticket is held, so its id stays unique): the
        # concurrency slot each holds, and the tickets the local fallback issued.
        self._slots: dict[int, tuple[Ticket, anyio.CapacityLimiter]] = {}
        self._fallback = LocalPacer(clock=clock, sleep=sleep)
        self._fallback_tickets: dict[int, Ticket] = {}
        self._outage_errors = _outage_errors()
        self._probe_first, self._probe_longest = probe_backoff
        self._on_outage = on_outage
        self._down = False
        self._backoff = self._probe_first
        self._next_probe = 0.0

    def __repr__(self) -> str:
        return f"RedisPacer(prefix={self._prefix!r})"  # the URL may carry a password

    @property
    def shared(self) -> bool:
        """Whether pacing currently goes through Redis (False during an outage)."""
        return not self._down

    def _table(self) -> dict[str, _LoopLocal]:
        try:
            return self._local.get()
        except LookupError:
            table: dict[str, _LoopLocal] = {}
            self._local.set(table)
            return table

    def _loop_local(self, key: str) -> _LoopLocal:
        table = self._table()
        local = table.get(key)
        if local is None:
            local = table[key] = _LoopLocal()
        return local

    def _redis(self) -> Any:
        # One connection pool per event loop: redis.asyncio connections belong to their loop.
        table = self._table()
        holder = table.get("")
        if holder is None:
            holder = table[""] = _LoopLocal()
        if holder.redis is None:
            import redis.asyncio

            holder.redis = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
            )
            holder.redis.pdauth_scripts = {}
        return holder.redis

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock.now())

    # -- outages ---------------------------------------------------------------------------

    def _try_redis(self) -> bool:
        """Whether to use Redis now: always when it is up; during an outage, once per probe
        interval (the interval is pushed back before the probe, so callers do not stampede)."""
        if not self._down:
            return True
        now = self._monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + self._backoff
        self._backoff = min(self._probe_longest, 2 * self._backoff)
        return True

    def _went_down(self, exc: BaseException) -> None:
        if self._down:
            return
        self._down = True
        self._backoff = self._probe_first
        self._next_probe = self._monotonic() + self._backoff
        # One warning per outage; never the URL (it may carry a password).
        _log.warning(
            "Redis is unreachable (%s): pacing in this process only until it is back",
            type(exc).__name__,
        )
        self._tell(down=True)

    def _came_back(self) -> None:
        if not self._down:
            return
        self._down = False
        self._backoff = self._probe_first
        _log.info("Redis is reachable again: pacing is shared again")
        self._tell(down=False)

    def _tell(self, *, down: bool) -> None:
        if self._on_outage is None:
            return
        try:
            self._on_outage(down)
        except Exception:  # an observer's bug must not fail a call
            _log.exception("the RedisPacer on_outage observer failed")

    async def _eval(self, script: str, key: str, *args: Any) -> Any:
        client = self._redis()
        scripts: dict[str, Any] = client.pdauth_scripts
        runner = scripts.get(script)
        if runner is None:
            runner = scripts[script] = client.register_script(script)  # EVALSHA, reloads if needed
        try:
            result = await runner(keys=script_keys(self._prefix, key), args=list(args))
        except self._outage_errors as exc:
            self._went_down(exc)
            raise
        self._came_back()
        return result

    async def aclose(self) -> None:
        """Close this event loop's Redis connections."""
        holder = self._table().pop("", None)
        if holder is not None and holder.redis is not None:
            await holder.redis.aclose()

    def _monotonic(self) -> float:
        return self._clock.monotonic() if self._clock is not None else anyio.current_time()

    # -- the Pacer port --------------------------------------------------------------------

    async def acquire(
        self, key: str, *, max_wait: float, max_concurrency: int | None = None
    ) -> Ticket:
        deadline = self._monotonic() + max(0.0, max_wait)
        if max_concurrency is None:
            return await self._acquire_anywhere(key, deadline)
        # The concurrency limit stays per process: a crashed process must not hold slots.
        limiter = concurrency_limiter(key, max_concurrency)
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.move_on_after(max(0.0, max_wait)) as scope:
                await limiter.acquire()
            if scope.cancelled_caught:
                raise DeadlineExceededError(
                    "the call's deadline passed while waiting for a concurrency slot"
                ) from None
        try:
            ticket = await self._acquire_anywhere(key, deadline)
        except BaseException:
            limiter.release()
            raise
        self._slots[id(ticket)] = (ticket, limiter)
        return ticket

    async def _acquire_anywhere(self, key: str, deadline: float) -> Ticket:
        if self._try_redis():
            try:
                return await self._acquire(key, deadline)
            except self._outage_errors:
                pass  # _eval noted the outage: this call goes on locally
        ticket = await self._fallback.acquire(key, max_wait=deadline - self._monotonic())
        self._fallback_tickets[id(ticket)] = ticket
        return ticket

    def _release(self, ticket: Ticket) -> None:
        # Called by the task that acquired: CapacityLimiter tokens belong to a task.
        held = self._slots.pop(id(ticket), None)
        if held is not None:
            held[1].release()

    async def _acquire(self, key: str, deadline: float) -> Ticket:
        local = self._loop_local(key)
        async with local.lock:
            while True:
                decision = parse_acquire(
                    await self._eval(ACQUIRE_LUA, key, self._now(), repr(self._ttl))
                )
                if isinstance(decision, Ticket):
                    return decision
                left = deadline - self._monotonic()
                if decision > left and (decision != float("inf") or left <= 0):
                    raise DeadlineExceededError(
                        "rate-limit pacing (shared through Redis) would wait past the call's "
                        "deadline"
                    )
                step = min(decision, left, POLL_INTERVAL)
                if self._sleep is not None:
                    await self._sleep(step)
                else:
                    with anyio.move_on_after(step):
                        await local.changed.wait()

    async def complete(
        self, key: str, ticket: Ticket, *, status: int, headers: RateLimitHeaders | None
    ) -> None:
        try:
            if self._fallback_tickets.pop(id(ticket), None) is not None:
                await self._fallback.complete(key, ticket, status=status, headers=headers)
            else:
                args = observe_args(self._now(), ticket, status, headers)
                # Redis out: the answer is the caller's all the same; Redis expires the entry.
                with contextlib.suppress(*self._outage_errors):
                    await self._eval(OBSERVE_LUA, key, *args)
        finally:
            self._release(ticket)
        self._loop_local(key).notify()

    async def abandon(self, key: str, ticket: Ticket) -> None:
        try:
            if self._fallback_tickets.pop(id(ticket), None) is not None:
                await self._fallback.abandon(key, ticket)
            else:
                with anyio.CancelScope(shield=True):  # also runs when the call was cancelled
                    with contextlib.suppress(*self._outage_errors):
                        await self._eval(FORGET_LUA, key, self._now(), ticket.seq)
        finally:
            self._release(ticket)
        self._loop_local(key).notify()

    async def block(self, key: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if self._try_redis():
            try:
                await self._eval(BLOCK_LUA, key, self._now(), repr(seconds))
                return
            except self._outage_errors:
                pass
        await self._fallback.block(key, seconds)
