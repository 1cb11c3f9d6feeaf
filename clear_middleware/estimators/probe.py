"""Optional: a cheap probe model estimates each subtask's needed tokens before the real call.

The TALE-style baseline of the paper: before a batch is planned, a small model is asked, per
subtask, how many tokens of reasoning a correct answer needs ("answer with one integer"). The
answer ``L_hat`` (tokens) turns the subtask's per-kind curve (from a *base* estimator, e.g.
:class:`~.history.HistoryEstimator` or :class:`~.static.StaticEstimator`) into a per-item curve.

Curve construction (log-tokens, vectorised over the batch). A kind's curve ``U_kind`` mixes
items: normalised by its ceiling it is the distribution of correct-answer lengths over the
kind's items and runs, with median ``m`` and log-spread ``s_kind`` (half the distance between
its 16% and 84% points in log-tokens). That spread is the spread *within* an item
(``within_sigma``: the same item's correct answers vary in length from run to run) plus the
spread *across* items, ``s_a^2 = s_kind^2 - within_sigma^2``, which is what the probe tells
apart. With the probe's log-error ``log(median) - log(L_hat) ~ N(bias, s_p^2)``, the item's
log-median is, given the kind (prior) and the probe (measurement), normal with

    precision  1/s_post^2 = 1/s_a^2 + 1/s_p^2
    mean       mu = s_post^2 * (log m / s_a^2 + (log L_hat + bias) / s_p^2)

and the item's curve is the kind's curve moved and narrowed in log-tokens to that centre and
the spread ``s_item = sqrt(within_sigma^2 + s_post^2)``:

    U_item(b) = U_kind(m * (b / e^mu)^(1 / r)),    r = min(s_item / s_kind, 1).

The kind curve's shape (skew, tails, ceiling) is kept; its median moves to ``e^mu``. An
uncertain probe spreads the curve (``r`` grows toward 1) exactly as
:func:`~clear_middleware.curves.uncertainty.spread_threshold` spreads an uncertain threshold,
but in log-tokens, because a probe's error is a factor, not a number of tokens; a useless probe
(``s_p -> inf``) gives back the kind curve exactly. The probe says nothing about the ceiling:
an item keeps its kind's.

Uncertainty, learned online. Settled calls of probed subtasks give the log-residual
``log(length) - log(L_hat)``: exactly for calls that finished on their own, as a lower bound
``log(cap) - log(L_hat)`` for calls cut at their cap (a correctness report that the answer was
wrong drops the call: its length is not a correct answer's). The residual is
``N(bias, s_p^2 + within_sigma^2)``; ``bias`` and the total sigma are fitted by censored
maximum likelihood (EM over the cut calls) with a documented prior: bias 0 and a total
log-sigma of :data:`PRIOR_SIGMA` = 1.0 (a probe within a factor of e ~ 2.7 two times in three),
each with the weight of :data:`PRIOR_WEIGHT` = 10 calls. ``s_p^2 = total^2 - within_sigma^2``
(at least :data:`MIN_PROBE_SIGMA` squared).

Charging. Probes are sent by the session before it plans (``prepare`` / ``aprepare``, called
by :class:`~clear_middleware.session.BudgetSession` with itself): each reserves its worst case
(prompt estimate plus margin, plus ``max_tokens``) in the session's ledger under its own call
id (``<session>/probe/<random>/<digest>``), is settled with the usage the provider reports,
and is released when the call fails; so the plan sees what is left after probing. Under a USD
cap the probe model is priced by the session's :class:`~clear_middleware.pricing.PriceBook`. A
probe that fails, is not funded, or answers no usable number leaves the subtask on its base
curve (counted in :attr:`ProbeEstimator.stats`). Answers are cached per (target model,
subtask digest): re-planning a batch, or running it again, does not probe it again.

Measured (what a probe of a given quality is worth) in ``benchmarks/probe.py`` with the
simulator's synthetic oracle probe; no real small model's estimates exist in the dev data.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .._validation import float_array, non_negative_int
from ..curves.base import UtilityCurves
from ..curves.empirical import EmpiricalCurve
from ..subtask import Subtask
from .base import CallObservation, CurveEstimator
from .prior import CURVE_GRID
from .prompt_features import prompt_text

if TYPE_CHECKING:
    from ..dispatch.client import Completion, LiteLLMClient
    from ..ledger import Amount
    from ..pricing import ModelPrice
    from ..session import BudgetSession

DEFAULT_TEMPLATE = (
    "Estimate how many tokens of reasoning a strong reasoning model needs to solve the task "
    "below correctly. Do not solve it. Answer with one integer only.\n\nTask:\n{prompt}"
)
"""The TALE-style probe question; ``{prompt}`` is the subtask's user text, ``{model}`` (optional)
the target model's name."""

PRIOR_SIGMA = 1.0
"""Prior total log-sigma of ``log(length) - log(probe estimate)`` (natural log)."""
PRIOR_WEIGHT = 10.0
"""Calls' worth of weight the prior bias (0) and sigma keep."""
WITHIN_SIGMA = 0.3
"""Default log-sd of a single item's correct-answer lengths from run to run: the median over
the dev data's items with three or more correct runs is 0.15 to 0.25 per model (biased low by
censoring), rounded up."""
MIN_PROBE_SIGMA = 0.05
"""Smallest probe log-sigma used (a perfect probe is not believed)."""
MAX_ESTIMATE = 10_000_000
"""Largest token estimate accepted from a probe; larger numbers count as unusable."""

_NUMBER = re.compile(
    r"(\d[\d,_]*(?:\.\d+)?)\s*(k\b|K\b|thousand\b)?(?:\s*(?:-|–|to)\s*(\d[\d,_]*(?:\.\d+)?)"
    r"\s*(k\b|K\b|thousand\b)?)?"
)


def parse_estimate(text: str | None) -> float | None:
    """The token count a probe answered, or ``None`` when it gave no usable number.

    Takes the first number in ``text`` (``"1,200"``, ``"1200 tokens"``, ``"1.5k"``,
    ``"about 800"``); a range ``"800-1200"`` gives its geometric mean. Numbers below 1 or above
    :data:`MAX_ESTIMATE` are unusable.

    Example:
        >>> parse_estimate("Roughly 1,500 tokens."), round(parse_estimate("800-1200"), 1)
        (1500.0, 979.8)
        >>> parse_estimate("I cannot tell") is None
        True
    """
    if not isinstance(text, str):
        return None
    # Hidden reasoning some models inline: the answer follows it.
    text = re.sub(r"<think>.*?(</think>|$)", " ", text, flags=re.DOTALL)
    found = _NUMBER.search(text)
    if found is None:
        return None

    def value(number: str, unit: str | None) -> float:
        v = float(number.replace(",", "").replace("_", ""))
        return v * 1000.0 if unit else v

    try:
        low = value(found.group(1), found.group(2) or found.group(4))
        estimate = low
        if found.group(3):
            high = value(found.group(3), found.group(4))
            estimate = math.sqrt(low * high) if high >= low > 0 else low
    except ValueError:
        return None
    if not (math.isfinite(estimate) and 1.0 <= estimate <= MAX_ESTIMATE):
        return None
    return float(estimate)


def probe_curves(
    base: UtilityCurves,
    estimate: NDArray[np.float64],
    *,
    probe_sigma: float,
    within_sigma: float = WITHIN_SIGMA,
    bias: float = 0.0,
) -> EmpiricalCurve:
    """Per-item curves from per-kind ``base`` curves and probe estimates (see the module doc).

    Args:
        base: one curve per subtask (its kind's); shifted surges are tabulated on
            :data:`~.prior.CURVE_GRID`.
        estimate: the probe's estimate per subtask (tokens > 0), ``nan`` where there is none
            (that row keeps its base curve).
        probe_sigma: the probe's log-error sigma (natural log, > 0).
        within_sigma: log-sd of one item's correct lengths (natural log, >= 0).
        bias: the probe's mean log-error, ``log(length) - log(estimate)`` (natural log; > 0
            when it underestimates): the estimate is multiplied by ``e^bias``.

    Example:
        >>> kind = EmpiricalCurve([0, 500, 1000, 2000, 4000], [[0, 0.1, 0.3, 0.5, 0.6]])
        >>> item = probe_curves(kind, np.array([3000.0]), probe_sigma=0.05)
        >>> float(item.saturation_tokens(0.5)[0]) > 2000.0   # the median moved up
        True
    """
    est = np.asarray(estimate, dtype=np.float64)
    if est.shape != (len(base),):
        raise ValueError(f"estimate must have shape ({len(base)},); got shape {est.shape}")
    sigma_p = float(float_array("probe_sigma", probe_sigma, low=0.0, low_open=True))
    sigma_w = float(float_array("within_sigma", within_sigma, low=0.0))
    curves = _tabulated(base)
    values = np.array(curves.values)
    rows = np.flatnonzero(np.isfinite(est) & (est > 0) & (curves.ceiling > 0))
    if rows.size == 0:
        return curves
    sub = curves.take(rows)
    lo, med, hi = (sub.saturation_tokens(f) for f in (0.158655, 0.5, 0.841345))
    log_m = np.log(np.maximum(med, 1.0))
    s_kind = np.maximum((np.log(np.maximum(hi, 1.0)) - np.log(np.maximum(lo, 1.0))) / 2, 1e-3)
    var_a = np.maximum(s_kind**2 - sigma_w**2, 1e-4)
    var_p = sigma_p**2
    var_post = 1.0 / (1.0 / var_a + 1.0 / var_p)
    mu = var_post * (log_m / var_a + (np.log(est[rows]) + bias) / var_p)
    r = np.minimum(np.sqrt(sigma_w**2 + var_post) / s_kind, 1.0)
    grid = curves.grid
    with np.errstate(divide="ignore"):
        log_ratio = np.log(grid)[None, :] - mu[:, None]
    mapped = np.exp(log_m[:, None] + log_ratio / r[:, None])  # b = 0 maps to 0
    values[rows] = sub.value(mapped)
    values[rows, 0] = 0.0
    return EmpiricalCurve(grid, np.maximum.accumulate(values, axis=1))


def _tabulated(curves: UtilityCurves) -> EmpiricalCurve:
    if isinstance(curves, EmpiricalCurve):
        return curves
    return EmpiricalCurve(CURVE_GRID, curves.value(CURVE_GRID[None, :]))


@dataclass
class ProbeStats:
    """What the probe did so far (counts of subtasks).

    Attributes:
        probed: probe calls that returned a usable estimate.
        cached: subtasks whose estimate came from the cache (no call).
        unparsed: probe calls that returned no usable number (base curve used).
        failed: probe calls that raised (reservation released; base curve used).
        unfunded: probes the session's budget could not reserve (not sent; base curve used).
        tokens: tokens the probe calls were charged (prompt + completion).
        usd: USD they were charged (0.0 when the probe model is unpriced).
    """

    probed: int = 0
    cached: int = 0
    unparsed: int = 0
    failed: int = 0
    unfunded: int = 0
    tokens: int = 0
    usd: float = 0.0


class ProbeEstimator:
    """Per-item curves from a cheap probe model's estimate of each subtask's needed tokens.

    Args:
        base: the per-kind estimator whose curves the probe moves (its ``observe`` and
            ``record_outcome`` are forwarded, so a learning base keeps learning).
        probe_model: any LiteLLM model name (or a Router group of the session's router).
        prompt_template: the probe question; ``{prompt}`` is replaced by the subtask's user
            text, ``{model}`` (optional) by the target model's name.
        max_tokens: output cap of a probe call (tokens, 1 to 4,096); its worst case is
            reserved.
        max_concurrency: probe calls in flight at once (>= 1).
        within_sigma: log-sd of one item's correct lengths from run to run (natural log,
            0 to 3; default :data:`WITHIN_SIGMA`).
        prior_sigma: prior total log-sigma of length vs estimate (natural log, > 0 and <= 5;
            default :data:`PRIOR_SIGMA`).
        prior_weight: calls' worth of weight of the prior bias and sigma (> 0).
        learn: learn bias and sigma from settled calls (``False``: keep the prior).
        cache_size: probe answers kept (>= 1; the oldest are dropped first).
        client: a :class:`~clear_middleware.dispatch.LiteLLMClient` for the probe calls
            (default: the session's client, so the same router / ``api_base`` / keys).
        **litellm_kwargs: extra arguments of every probe call (``api_base``, ``extra_body``,
            ``temperature``...).

    Example:
        >>> from clear_middleware.estimators import StaticEstimator
        >>> est = ProbeEstimator(StaticEstimator(), "openai/gpt-4o-mini")
        >>> round(est.probe_sigma, 3), est.bias   # the prior, before any call settled
        (0.954, 0.0)
    """

    def __init__(
        self,
        base: CurveEstimator,
        probe_model: str,
        *,
        prompt_template: str = DEFAULT_TEMPLATE,
        max_tokens: int = 24,
        max_concurrency: int = 16,
        within_sigma: float = WITHIN_SIGMA,
        prior_sigma: float = PRIOR_SIGMA,
        prior_weight: float = PRIOR_WEIGHT,
        learn: bool = True,
        cache_size: int = 100_000,
        client: LiteLLMClient | None = None,
        **litellm_kwargs: Any,
    ) -> None:
        if not isinstance(base, CurveEstimator):
            raise ValueError("base must be a CurveEstimator (estimate, observe, record_outcome)")
        if not isinstance(probe_model, str) or not probe_model:
            raise ValueError(f"probe_model must be a non-empty LiteLLM model name; got "
                             f"{probe_model!r}")
        if not isinstance(prompt_template, str) or "{prompt}" not in prompt_template:
            raise ValueError("prompt_template must be a str containing '{prompt}' (and "
                             "optionally '{model}')")
        try:
            prompt_template.format(prompt="", model="")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"prompt_template may only use the fields {{prompt}} and "
                             f"{{model}}; got {error!r}") from error
        self.base = base
        self.probe_model = probe_model
        self.prompt_template = prompt_template
        self.max_tokens = non_negative_int("max_tokens", max_tokens, minimum=1)
        if self.max_tokens > 4096:
            raise ValueError(f"max_tokens must be an integer in [1, 4096]; got {max_tokens!r}")
        self.max_concurrency = non_negative_int("max_concurrency", max_concurrency, minimum=1)
        self.within_sigma = float(float_array("within_sigma", within_sigma, low=0.0, high=3.0))
        self.prior_sigma = float(float_array("prior_sigma", prior_sigma, low=0.0, high=5.0,
                                             low_open=True))
        self.prior_weight = float(float_array("prior_weight", prior_weight, low=0.0,
                                              low_open=True))
        self.learn = bool(learn)
        self.cache_size = non_negative_int("cache_size", cache_size, minimum=1)
        self._client = client
        self.litellm_kwargs = dict(litellm_kwargs)
        self.stats = ProbeStats()
        self._lock = threading.Lock()
        # (target model, digest) -> estimate (tokens) or None (answered, unusable).
        self._cache: OrderedDict[tuple[str, str], float | None] = OrderedDict()
        # digest -> log estimate, for matching settled calls; call id -> residual.
        self._predicted: OrderedDict[str, float] = OrderedDict()
        self._residuals: OrderedDict[str, tuple[float, bool]] = OrderedDict()
        self._fit: tuple[float, float] | None = None

    # -- the estimate --------------------------------------------------------------------------
    def estimate(self, subtasks: Sequence[Subtask], model: str) -> UtilityCurves:
        """Base curves moved to the cached probe estimates (subtasks not probed keep theirs)."""
        base = self.base.estimate(subtasks, model)
        with self._lock:
            est = np.array([self._cache.get((model, s.digest)) or np.nan for s in subtasks],
                           dtype=np.float64)
        if not np.isfinite(est).any():
            return base
        bias, sigma = self.bias, self.probe_sigma
        return probe_curves(base, est, probe_sigma=sigma, within_sigma=self.within_sigma,
                            bias=bias)

    def cached_estimate(self, subtask: Subtask, model: str) -> float | None:
        """The probe's cached estimate for ``subtask`` (tokens), or ``None``."""
        with self._lock:
            return self._cache.get((model, subtask.digest))

    def remember(self, subtask: Subtask, model: str, tokens: float) -> None:
        """Store an estimate obtained elsewhere (an offline probe, a previous process): the
        subtask is then not probed, and its calls teach the probe's error as any other.

        Args:
            subtask: the subtask (keyed by its digest).
            model: the target model the estimate is for (the session's provider model).
            tokens: the estimated tokens a correct answer needs (> 0 and finite).
        """
        value = float(float_array("tokens", tokens, low=0.0, low_open=True))
        with self._lock:
            self._cache[model, subtask.digest] = value
            self._predicted[subtask.digest] = math.log(value)
            _bound(self._cache, self.cache_size)
            _bound(self._predicted, self.cache_size)

    @property
    def learned_calls(self) -> tuple[int, int]:
        """Settled calls the probe's error is learned from: ``(finished, cut at their cap)``."""
        with self._lock:
            cut = sum(c for _, c in self._residuals.values())
            return len(self._residuals) - cut, cut

    # -- the uncertainty -----------------------------------------------------------------------
    @property
    def total_sigma(self) -> float:
        """Log-sigma of ``log(length) - log(estimate)`` (probe error and run-to-run spread)."""
        return self._fitted()[1]

    @property
    def bias(self) -> float:
        """Mean of ``log(length) - log(estimate)``: > 0 when the probe underestimates."""
        return self._fitted()[0]

    @property
    def probe_sigma(self) -> float:
        """The probe's own log-error sigma: ``sqrt(total^2 - within^2)``, at least
        :data:`MIN_PROBE_SIGMA`."""
        total = self.total_sigma
        return math.sqrt(max(total**2 - self.within_sigma**2, MIN_PROBE_SIGMA**2))

    def _fitted(self) -> tuple[float, float]:
        with self._lock:
            if self._fit is None:
                values = list(self._residuals.values())
                r = np.array([v for v, _ in values], dtype=np.float64)
                cut = np.array([c for _, c in values], dtype=bool)
                self._fit = fit_log_error(r[~cut], r[cut], prior_sigma=self.prior_sigma,
                                          prior_weight=self.prior_weight)
            return self._fit

    def observe(self, observation: CallObservation) -> None:
        """Forward to the base; learn the probe's error from a probed subtask's call."""
        self.base.observe(observation)
        if not self.learn or observation.digest is None or observation.cap <= 0:
            return
        with self._lock:
            log_est = self._predicted.get(observation.digest)
            if log_est is None:
                return
            if observation.finished:
                if observation.correct is False or observation.completion_tokens <= 0:
                    return
                residual = math.log(observation.completion_tokens) - log_est
            else:
                residual = math.log(observation.cap) - log_est
            self._residuals[observation.call_id] = (residual, not observation.finished)
            _bound(self._residuals, self.cache_size)
            self._fit = None

    def record_outcome(
        self, call_id: str, correct: bool, *, model: str, kind: str | None,
        hint: str | None = None,
    ) -> None:
        """Forward to the base; a wrong answer's length is not a correct answer's: drop it."""
        self.base.record_outcome(call_id, correct, model=model, kind=kind, hint=hint)
        if correct is False:
            with self._lock:
                seen = self._residuals.get(call_id)
                if seen is not None and not seen[1]:
                    del self._residuals[call_id]
                    self._fit = None

    # -- probing -------------------------------------------------------------------------------
    def _todo(self, subtasks: Sequence[Subtask], model: str) -> list[Subtask]:
        todo: dict[str, Subtask] = {}
        with self._lock:
            for s in subtasks:
                key = (model, s.digest)
                if key in self._cache:
                    self._cache.move_to_end(key)
                    self.stats.cached += 1
                elif s.digest not in todo:
                    todo[s.digest] = s
        return list(todo.values())

    def _messages(self, subtask: Subtask, model: str) -> list[dict[str, str]]:
        question = self.prompt_template.format(prompt=prompt_text(subtask), model=model)
        return [{"role": "user", "content": question}]

    def _store(self, subtask: Subtask, model: str, completion: Completion | None,
               charged: Amount | None) -> None:
        with self._lock:
            if charged is not None:
                self.stats.tokens += charged.tokens
                self.stats.usd += charged.usd or 0.0
            if completion is None:
                self.stats.failed += 1
                return
            estimate = parse_estimate(completion.text)
            if estimate is None:
                self.stats.unparsed += 1
            else:
                self.stats.probed += 1
                self._predicted[subtask.digest] = math.log(estimate)
                _bound(self._predicted, self.cache_size)
            self._cache[model, subtask.digest] = estimate
            _bound(self._cache, self.cache_size)

    def _client_for(self, session: BudgetSession | None) -> LiteLLMClient:
        if self._client is not None:
            return self._client
        if session is not None:
            return session.client
        from ..dispatch.client import LiteLLMClient

        self._client = LiteLLMClient()
        return self._client

    def _setup(self, session: BudgetSession | None
               ) -> tuple[LiteLLMClient, str, dict[str, Any], ModelPrice | None]:
        from ..dispatch.provider_settings import provider_settings

        client = self._client_for(session)
        provider = client.provider_model(self.probe_model)
        settings = provider_settings(provider, self.max_tokens).kwargs
        price = None
        if session is not None:
            # Required (MissingPriceError) only when the session has a USD cap.
            price = session._price_of(provider, required=session.caps.usd is not None)
        return client, provider, settings, price

    def _amount(self, session: BudgetSession, messages: list[dict[str, str]], provider: str,
                price: ModelPrice | None) -> tuple[Amount, int]:
        from ..ledger import Amount
        from ..tokens import count_message_tokens

        estimate = count_message_tokens(messages, provider)
        prompt = session.prompt_margin.reserve_tokens(self.probe_model, estimate)
        return Amount.for_call(prompt, self.max_tokens, price), estimate

    def _charged(self, session: BudgetSession, completion: Completion, estimate: int,
                 price: ModelPrice | None) -> Amount | None:
        from ..ledger import Amount

        usage = completion.usage
        if usage is None:
            return None
        if usage.prompt_tokens > 0 and estimate > 0:
            session.prompt_margin.observe(self.probe_model, estimated=estimate,
                                          reported=usage.prompt_tokens)
        return Amount.of_usage(usage, price)

    @staticmethod
    def _call_id(session: BudgetSession, subtask: Subtask) -> str:
        return f"{session.session_id[:40]}/probe/{uuid.uuid4().hex[:12]}/{subtask.digest[:16]}"

    async def aprepare(self, subtasks: Sequence[Subtask], model: str, *,
                       session: BudgetSession | None = None) -> None:
        """Probe the subtasks not in the cache, concurrently (at most ``max_concurrency``
        calls in flight), charging each call to ``session`` when given."""
        todo = self._todo(subtasks, model)
        if not todo:
            return
        client, provider, settings, price = self._setup(session)
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def one(subtask: Subtask) -> None:
            async with semaphore:
                await self._aprobe(subtask, model, session, client, provider, settings, price)

        await asyncio.gather(*(one(s) for s in todo))

    async def _aprobe(self, subtask: Subtask, model: str, session: BudgetSession | None,
                      client: LiteLLMClient, provider: str, settings: dict[str, Any],
                      price: ModelPrice | None) -> None:
        from ..ledger import BudgetExceeded

        messages = self._messages(subtask, model)
        call_id = None
        if session is not None:
            amount, estimate = self._amount(session, messages, provider, price)
            call_id = self._call_id(session, subtask)
            try:
                await session.ledger.areserve(session.session_id, call_id, amount)
            except BudgetExceeded:
                with self._lock:
                    self.stats.unfunded += 1
                return
        try:
            completion = await client.acomplete(self.probe_model, messages, settings,
                                                **self.litellm_kwargs)
        except Exception:
            if session is not None and call_id is not None:
                await session.ledger.arelease(session.session_id, call_id)
            self._store(subtask, model, None, None)
            return
        except BaseException:  # cancelled: the reservation must not leak
            if session is not None and call_id is not None:
                await asyncio.shield(session.ledger.arelease(session.session_id, call_id))
            raise
        charged = None
        if session is not None and call_id is not None:
            charged = self._charged(session, completion, estimate, price)
            settlement = await session.ledger.acommit(session.session_id, call_id, charged)
            charged = charged or _settled(settlement)
        self._store(subtask, model, completion, charged)

    def prepare(self, subtasks: Sequence[Subtask], model: str, *,
                session: BudgetSession | None = None) -> None:
        """Blocking :meth:`aprepare` (threads; usable with or without a running event loop)."""
        todo = self._todo(subtasks, model)
        if not todo:
            return
        client, provider, settings, price = self._setup(session)
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo))) as pool:
            list(pool.map(lambda s: self._probe(s, model, session, client, provider, settings,
                                                price), todo))

    def _probe(self, subtask: Subtask, model: str, session: BudgetSession | None,
               client: LiteLLMClient, provider: str, settings: dict[str, Any],
               price: ModelPrice | None) -> None:
        from ..ledger import BudgetExceeded

        messages = self._messages(subtask, model)
        call_id = None
        if session is not None:
            amount, estimate = self._amount(session, messages, provider, price)
            call_id = self._call_id(session, subtask)
            try:
                session.ledger.reserve(session.session_id, call_id, amount)
            except BudgetExceeded:
                with self._lock:
                    self.stats.unfunded += 1
                return
        try:
            completion = client.complete(self.probe_model, messages, settings,
                                         **self.litellm_kwargs)
        except BaseException as error:
            if session is not None and call_id is not None:
                session.ledger.release(session.session_id, call_id)
            if not isinstance(error, Exception):
                raise
            self._store(subtask, model, None, None)
            return
        charged = None
        if session is not None and call_id is not None:
            charged = self._charged(session, completion, estimate, price)
            settlement = session.ledger.commit(session.session_id, call_id, charged)
            charged = charged or _settled(settlement)
        self._store(subtask, model, completion, charged)

    def __repr__(self) -> str:
        return f"ProbeEstimator(probe_model={self.probe_model!r}, base={self.base!r})"


def _settled(settlement: Any) -> Amount:
    """What a commit without usage charged (the whole reservation)."""
    from ..ledger import Amount, nano_to_usd

    return Amount(int(settlement.charged_tokens), nano_to_usd(settlement.charged_nano_usd))


def _bound(mapping: OrderedDict, size: int) -> None:
    while len(mapping) > size:
        mapping.popitem(last=False)


_SQRT2 = math.sqrt(2.0)
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _inverse_mills(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """``phi(a) / (1 - Phi(a))``, stable for large ``a`` (where it tends to ``a``)."""
    tail = 0.5 * _erfc(np.minimum(a, 8.0) / _SQRT2)
    exact = np.exp(-0.5 * np.minimum(a, 8.0) ** 2) / math.sqrt(2 * math.pi) / tail
    asymptotic = a + 1.0 / np.maximum(a, 1e-9) - 2.0 / np.maximum(a, 1e-9) ** 3
    return np.where(a < 8.0, exact, asymptotic)


def fit_log_error(
    exact: NDArray[np.float64], lower: NDArray[np.float64], *, prior_sigma: float = PRIOR_SIGMA,
    prior_weight: float = PRIOR_WEIGHT, iterations: int = 100,
) -> tuple[float, float]:
    """``(mean, sigma)`` of normal log-residuals, some exact and some only known from below.

    Maximum a posteriori by EM: each lower bound ``c`` enters with the mean and second moment
    of the normal truncated to ``> c``. The prior is a mean of 0 and a sigma of
    ``prior_sigma``, each worth ``prior_weight`` observations.

    Args:
        exact: residuals observed exactly (natural-log units).
        lower: residuals known to exceed these values (censored calls).
        prior_sigma: prior sigma (> 0).
        prior_weight: observations' worth of the prior (> 0).
        iterations: EM steps (it stops early once the estimates move by < 1e-9).

    Example:
        >>> fit_log_error(np.array([]), np.array([]))
        (0.0, 1.0)
    """
    x = np.asarray(exact, dtype=np.float64)
    c = np.asarray(lower, dtype=np.float64)
    n = x.size + c.size
    k = float(prior_weight)
    mu, sigma = 0.0, float(prior_sigma)
    if n == 0:
        return mu, sigma
    sx, sxx = float(x.sum()), float((x * x).sum())
    for _ in range(iterations):
        lam = _inverse_mills((c - mu) / sigma)
        e1 = mu + sigma * lam
        e2 = mu * mu + sigma * sigma + sigma * (c + mu) * lam
        s1, s2 = sx + float(e1.sum()), sxx + float(e2.sum())
        new_mu = s1 / (n + k)  # prior mean 0 with weight k
        var = (s2 - 2 * new_mu * s1 + n * new_mu**2 + k * new_mu**2 + k * prior_sigma**2) / (
            n + k)
        new_sigma = math.sqrt(max(var, 1e-8))
        done = abs(new_mu - mu) < 1e-9 and abs(new_sigma - sigma) < 1e-9
        mu, sigma = new_mu, new_sigma
        if done:
            break
    return float(mu), float(sigma)
