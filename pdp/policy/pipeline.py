"""The policy lifecycle's three hooks in the decision pipeline, in one place.

* **Provenance**: each record's ``bundles.<name>`` carries the revision and the key id the bundle
  was verified with (``signing_key``, from OPA's configuration via :class:`BundleWatch`).
* **Policy-driven masking**: the pointers the bundle's masking rule names for each input (in the
  same answer as the decision), added to the static ones before the record is signed
  (:mod:`pdp.policy.masking`).
* **Shadow**: recorded live decisions handed to the shadow candidate (:mod:`pdp.policy.shadow`).

The pipeline (:class:`pdp.decide.Decider`) calls :meth:`Lifecycle.bundles`,
:meth:`Lifecycle.split` and :meth:`Lifecycle.after`; each is a no-op when its part is off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics

from pdp.opa import OpaAnswer
from pdp.policy.masking import NONE, Pointers, PolicyMasks
from pdp.policy.shadow import Live, Shadow
from pdp.policy.watch import BundleWatch
from pdp.schema import ShadowRecord

if TYPE_CHECKING:
    from pdp.config import Settings

# Kept in a record whose masking rule failed (the decision is a DENY anyway): who asked, for
# which agent and tool, and the action digest; everything else is erased, since nobody can say
# which of it the policy wanted hidden.
_FAIL_SAFE_KEEP = frozenset({"agent", "caller", "bound", "request_time", "action_digest"})


class Lifecycle:
    """Bundle key ids, policy masks and the shadow candidate, for the decision pipeline.

    Args:
        watch: OPA's bundle status (key ids for the records); None: no key ids.
        masks: the bundle's masking rule; None: static pointers only.
        shadow: the shadow candidate; None: no shadow.
    """

    def __init__(
        self, *, watch: BundleWatch | None = None, masks: PolicyMasks | None = None, shadow: Shadow | None = None
    ) -> None:
        self.watch = watch
        self.masks = masks
        self.shadow = shadow

    def signing_keys(self, revisions: dict[str, str]) -> dict[str, str]:
        """The id of the key OPA verified each of these bundles with (signed bundles only)."""
        keys = self.watch.signing_keys if self.watch is not None else {}
        return {name: keys[name] for name in revisions if name in keys}

    def split(
        self, answers: list[OpaAnswer], inputs: Sequence[dict[str, Any]], *, timeout_s: float
    ) -> tuple[list[OpaAnswer], list[Pointers]]:
        """The decision answers and what the policy wants hidden of each input (see :class:`PolicyMasks`).

        Raises:
            NoVerdict: no usable answer.
        """
        if self.masks is None:
            return answers, [NONE] * len(answers)
        return self.masks.split(answers, inputs, timeout_s=timeout_s)

    def unknown(self, inputs: Sequence[dict[str, Any]]) -> list[Pointers]:
        """What to hide when the policy gave no answer: with policy masking on, all but who asked."""
        return [fail_safe(doc) for doc in inputs] if self.masks is not None else [NONE] * len(inputs)

    def after(self, decisions: Sequence[Live]) -> None:
        """Hands recorded live decisions to the shadow candidate (never blocks, never raises)."""
        if self.shadow is not None and decisions:
            self.shadow.submit(decisions)

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        if self.masks is not None:
            self.masks.close()


def fail_safe(input_doc: dict[str, Any]) -> Pointers:
    """Pointers that erase all but who asked and the question's digest: for a record whose
    masking rule could not be evaluated."""
    erase = [f"/{k}" for k in input_doc if k not in _FAIL_SAFE_KEEP]
    return Pointers(erase=(*erase, "/agent/version", "/agent/owner", "/agent/model"))


def policy_lifecycle(
    settings: Settings, meter_provider: metrics.MeterProvider, record_shadow: Callable[[ShadowRecord], Any]
) -> Lifecycle:
    """The hooks the settings ask for: the bundle watch always (it reads OPA's status and
    config), policy masks unless ``PDP_MASK_PATH`` is empty, the shadow with ``PDP_SHADOW_OPA_URL``."""
    return Lifecycle(
        watch=BundleWatch(opa_url=settings.opa_url, timeout_s=settings.opa_timeout_s, meter_provider=meter_provider),
        masks=PolicyMasks(
            opa_url=settings.opa_url,
            path=settings.mask_path,
            decision_path=settings.decision_path,
            batch_path=settings.batch_path,
        )
        if settings.mask_path
        else None,
        shadow=Shadow(
            opa_url=settings.shadow_opa_url,
            decision_path=settings.decision_path,
            batch_path=settings.batch_path,
            sample=settings.shadow_sample,
            record=record_shadow,
            meter_provider=meter_provider,
        )
        if settings.shadow_opa_url
        else None,
    )
