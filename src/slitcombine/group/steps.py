"""The constructor steps of :class:`~slitcombine.SlitGroup`, and the seed-only keywords.

Two things live here:

* :func:`ignore_seed_keywords`: the one compatibility path for keywords that the seed
  (``msaexp.slit_combine``) accepts but slitcombine does not use.  They are accepted,
  recorded in ``meta['ignored_kwargs']`` and logged once, at one level, wherever they
  are given.
* :data:`STEPS`: the ordered table of the constructor steps (name, method, option
  keyword, configuration section, rejection bit, condition).  The constructor runs it
  (:func:`run_steps`) and the configuration's step sections and their methods
  (:mod:`slitcombine.pipeline.config`) are derived from it.  One name per step: a step
  with options of its own, ``X_kwargs`` (the seed's keyword), is ``X`` in
  ``meta['steps']`` and is the configuration section ``[X]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from slitcombine.core.masks import Reject

__all__ = ["STEPS", "Step", "UNUSED", "ignore_seed_keywords", "run_steps", "step_sections"]

log = logging.getLogger(__name__)

#: Level of the log line of :func:`ignore_seed_keywords` (the same for every step): an
#: option the user gave has no effect.
IGNORED_LEVEL = logging.WARNING


class _Unused:
    """Type of :data:`UNUSED` (one instance, a readable repr in signatures)."""

    __slots__ = ()

    def __repr__(self):
        return "UNUSED"

    def __reduce__(self):
        return "UNUSED"


#: Default of a seed-only keyword parameter: "not given".
UNUSED = _Unused()


def ignore_seed_keywords(group, where, **given):
    """Accept keywords of the seed (msaexp) that slitcombine does not use.

    How to use it: declare every seed-only keyword of a method as an explicit
    keyword-only parameter with the default :data:`UNUSED`, document it as "accepted
    for compatibility, ignored", and pass them all to this function, which keeps those
    that were given::

        from slitcombine.group.steps import UNUSED, ignore_seed_keywords

        def flag_slit_hot_pixels(self, rnoise_threshold=16.0, *, rnoise_percentile=UNUSED):
            ignored = ignore_seed_keywords(
                self, "slit_hotpix", rnoise_percentile=rnoise_percentile
            )

    A keyword that is neither used nor a seed keyword is then a ``TypeError`` of
    Python (and :mod:`slitcombine.pipeline.config` rejects it from the signature), the
    same for every step.

    Parameters
    ----------
    group : SlitGroup
        The group (its ``meta`` and ``name`` are used).
    where : str
        The step name (:data:`STEPS`) or the method, the key under which the names are
        recorded.
    **given
        The seed-only keywords and their values; those equal to :data:`UNUSED` were not
        given.

    Returns
    -------
    list of str
        The sorted names that were given (empty if none).  They are added to
        ``group.meta['ignored_kwargs'][where]`` and logged once at
        :data:`IGNORED_LEVEL` (not again when the same names are given again to the
        same step).
    """
    names = sorted(k for k, v in given.items() if v is not UNUSED)
    if not names:
        return names
    record = group.meta.setdefault("ignored_kwargs", {})
    before = record.get(where, [])
    new = [n for n in names if n not in before]
    if new:
        record[where] = sorted({*before, *names})
        log.log(
            IGNORED_LEVEL,
            "%s: %s: ignoring %s (seed options without effect in slitcombine)",
            group.name,
            where,
            ", ".join(new),
        )
    return names


# ---------------------------------------------------------------------------- the table
def _always(group, opt):
    return True


def _given(keyword, extra=None):
    """Condition: the step's options are given (not None), and ``extra`` holds."""

    def condition(group, opt):
        return getattr(opt, keyword) is not None and (extra is None or extra(group, opt))

    return condition


def _true(keyword, extra=None):
    """Condition: the option is true, and ``extra`` holds."""

    def condition(group, opt):
        return bool(getattr(opt, keyword)) and (extra is None or extra(group, opt))

    return condition


def _three_or_more(group, opt):
    return group.N > 2


def _after_sky(group, opt):
    return opt.estimate_sky_kwargs is not None


def _stuck_wanted(group, opt):
    threshold = opt.stuck_threshold
    return bool(group.bad_shutter_names) or (threshold is not None and threshold > 0)


def _grating_diffs(group, opt):
    return not group.meta["diffs"] and bool(opt.grating_diffs) and group.grating != "PRISM"


def _no_options(group, opt):
    return {}


def _kwargs_of(keyword):
    def options(group, opt):
        return opt.step_kwargs(keyword)

    return options


@dataclass(frozen=True)
class Step:
    """One constructor step of :class:`~slitcombine.SlitGroup`.

    Attributes
    ----------
    name : str
        Its key in ``meta['steps']`` (and its configuration section when it has
        options of its own).
    method : str
        The ``SlitGroup`` method that runs it (called with :attr:`options`).
    keyword : str or None
        The constructor keyword (the seed's) that controls it.
    section : str or None
        The configuration section of :attr:`keyword` (``'group'`` for a scalar option).
    bit : Reject or None
        The rejection bit(s) it sets.
    when : str
        When it runs (the text of :attr:`condition`).
    condition : callable
        ``condition(group, options) -> bool``, evaluated when the step comes.
    options : callable
        ``options(group, options) -> dict``: the method's keyword arguments.
    recorded : bool
        Whether it has an entry in ``meta['steps']`` (a step that does not run is
        recorded as ``SKIPPED`` unless an earlier run of it is recorded).
    """

    name: str
    method: str
    keyword: str | None
    section: str | None
    bit: Reject | None
    when: str
    condition: Callable = _always
    options: Callable = _no_options
    recorded: bool = True


def _step_with_kwargs(method, keyword, bit, when, extra=None):
    """A step with options of its own: ``X_kwargs``, section and name ``X``.

    It runs when ``keyword`` is not None (and ``extra`` holds).
    """
    section = keyword[: -len("_kwargs")]
    return Step(
        section,
        method,
        keyword,
        section,
        bit,
        when,
        condition=_given(keyword, extra),
        options=_kwargs_of(keyword),
    )


_FLAG_TRACE = ("flag_trace_outliers", "flag_trace_kwargs", Reject.TRACE)
_FLAG_PERCENTILE = (
    "flag_percentile_outliers",
    "flag_percentile_kwargs",
    Reject.PERCENTILE,
)

#: The constructor steps of :class:`~slitcombine.SlitGroup`, in order (one-way: each
#: sees what the previous ones did).
STEPS = (
    Step("read", "_read_exposures", None, None, None, "always"),
    Step(
        "pathloss_undo",
        "parse_data",
        "undo_pathloss",
        "group",
        Reject.DQ | Reject.NONFINITE | Reject.FAILED_OPEN | Reject.BORDER | Reject.LOW_BAR,
        "always: stack the exposures in uJy, undo the path loss, initial rejections",
        options=lambda group, opt: {
            "with_sflat_correction": opt.with_sflat_correction,
            "with_extra_dq": opt.with_extra_dq,
        },
    ),
    _step_with_kwargs(
        "apply_extended_calibration",
        "extended_calibration_kwargs",
        None,
        "extended_calibration_kwargs is not None",
    ),
    Step(
        "sflat",
        "apply_sflat_correction",
        "with_sflat_correction",
        "group",
        Reject.NONFINITE,
        "with_sflat_correction",
        condition=_true("with_sflat_correction"),
    ),
    Step(
        "extra_dq",
        "apply_extra_dq",
        "with_extra_dq",
        "group",
        Reject.DQ,
        "with_extra_dq",
        condition=_true("with_extra_dq"),
    ),
    Step(
        "traces",
        "_setup_traces",
        "trace_from_yoffset",
        "group",
        None,
        "always: traces, nod_offset, num_shutters",
        recorded=False,
    ),
    Step(
        "stuck_shutters",
        "_mask_bad_shutters",
        "stuck_threshold",
        "group",
        Reject.BAD_SHUTTER,
        "bad_shutter_names given, or stuck_threshold > 0",
        condition=_stuck_wanted,
    ),
    Step(
        "barshadow",
        "_setup_barshadow",
        "undo_barshadow",
        "group",
        Reject.LOW_BAR,
        "always (undo_barshadow: 2 own model, True undo, False keep)",
    ),
    Step(
        "grating_diffs",
        "_force_grating_diffs",
        "grating_diffs",
        "group",
        None,
        "diffs False, grating_diffs and a grating (not PRISM)",
        condition=_grating_diffs,
        recorded=False,
    ),
    _step_with_kwargs(
        "flag_slit_hot_pixels",
        "slit_hotpix_kwargs",
        Reject.NOISY,
        "slit_hotpix_kwargs is not None",
    ),
    Step(
        "global_sky",
        "get_global_sky",
        "sky_file",
        "group",
        None,
        "sky_file is not None",
        condition=_given("sky_file"),
        options=lambda group, opt: {"sky_file": opt.sky_file},
    ),
    Step(
        "normalization",
        "apply_normalization_correction",
        "fix_prism_norm",
        "group",
        Reject.NONFINITE,
        "fix_prism_norm",
        condition=_true("fix_prism_norm"),
    ),
    _step_with_kwargs(
        "flag_hot_cold_pixels",
        "hot_cold_kwargs",
        Reject.HOT_COLD,
        "hot_cold_kwargs is not None and N > 2",
        extra=_three_or_more,
    ),
    _step_with_kwargs(*_FLAG_TRACE, "flag_trace_kwargs is not None"),
    _step_with_kwargs(*_FLAG_PERCENTILE, "flag_percentile_kwargs is not None"),
    _step_with_kwargs(
        "estimate_sky", "estimate_sky_kwargs", Reject.SKY, "estimate_sky_kwargs is not None"
    ),
    # again, on the sky-subtracted data
    _step_with_kwargs(*_FLAG_TRACE, "again after estimate_sky", extra=_after_sky),
    _step_with_kwargs(*_FLAG_PERCENTILE, "again after estimate_sky", extra=_after_sky),
    _step_with_kwargs(
        "flag_from_profile",
        "flag_profile_kwargs",
        Reject.PROFILE,
        "flag_profile_kwargs is not None",
    ),
    _step_with_kwargs(
        "flag_2d_outliers",
        "flag_2d_kwargs",
        Reject.OUTLIER_2D,
        "flag_2d_kwargs is not None",
    ),
    Step(
        "multiple_mask",
        "apply_multiple_mask",
        "do_multiple_mask",
        "group",
        Reject.MULTIPLE,
        "do_multiple_mask and N > 2",
        condition=_true("do_multiple_mask", _three_or_more),
    ),
    _step_with_kwargs(
        "set_background_spectra",
        "set_background_spectra_kwargs",
        Reject.NONFINITE,
        "set_background_spectra_kwargs is not None",
    ),
    _step_with_kwargs(
        "fit_shutter_offset",
        "fit_shutter_offset_kwargs",
        Reject.LOW_BAR,
        "fit_shutter_offset_kwargs is not None",
    ),
)


def run_steps(group, options, steps=STEPS):
    """Run the constructor steps on ``group``, in order.

    Parameters
    ----------
    group : SlitGroup
        The group; its methods do the work and record what they did.
    options : slitcombine.group.options.GroupOptions
        The constructor's options.
    steps : sequence of Step
        The steps (default: all of :data:`STEPS`).

    A step whose condition does not hold is recorded as ``SKIPPED`` in
    ``meta['steps']`` (if :attr:`Step.recorded` and no earlier run of it is recorded).
    """
    for step in steps:
        if step.condition(group, options):
            getattr(group, step.method)(**step.options(group, options))
        elif step.recorded and step.name not in group.meta["steps"]:
            group.meta["steps"][step.name] = {"status": "SKIPPED"}


def step_sections():
    """``{section: Step}`` of the steps that have options of their own (``X_kwargs``).

    The first entry of a step that appears twice in :data:`STEPS`.
    """
    out = {}
    for step in STEPS:
        if step.keyword is not None and step.keyword.endswith("_kwargs"):
            out.setdefault(step.section, step)
    return out
