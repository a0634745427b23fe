"""The constructor steps of :class:`~slitcombine.SlitGroup`, and the seed-only keywords.

Two things live here:

* :func:`ignore_seed_keywords`: the one compatibility path for keywords that the seed
  (``msaexp.slit_combine``) accepts but slitcombine does not use.  They are accepted,
  recorded in ``meta['ignored_kwargs']`` and logged once, at one level, wherever they
  are given.
* :data:`STEPS`: the ordered table of the constructor steps (name, method, option
  keyword, configuration section, rejection bit, condition).  The constructor, the
  configuration sections (:mod:`slitcombine.pipeline.config`) and the documentation are
  derived from it.
"""

from __future__ import annotations

import logging

__all__ = ["UNUSED", "ignore_seed_keywords"]

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
