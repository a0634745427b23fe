"""The options of a :class:`~slitcombine.SlitGroup`: one frozen, validated record.

:class:`GroupOptions` holds every keyword of the constructor as the user gave it (the
seed's names and defaults, see ``msaexp.slit_combine.SlitGroup``).  The steps read their
options from it (``group.options``); ``group.meta`` records what the steps did.

``meta`` still reports the seed's keywords, as msaexp does, but several of them are
rewritten by the steps and then hold a *result*, not the option:

* ``undo_barshadow``: 2 (own model) becomes False once the model is applied, True
  becomes False without a BARSHADOW extension;
* ``diffs``: forced True for gratings by ``grating_diffs``;
* ``num_shutters``: the number used (``num_shutters_requested`` is the option);
* ``nod_offset``: the nod step in pixels when None was given;
* ``shutter_offset``: the fitted offset after ``fit_shutter_offset``;
* ``sky_file``: the base name of the table read ("N/A" when none was found).

The option as given stays in :class:`GroupOptions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from slitcombine.core import nods
from slitcombine.errors import ConfigurationError

__all__ = ["GroupOptions", "ON", "POSITION_KEYS", "EXTENDED_CALIBRATION_DEFAULT", "META_COMMENTS"]

#: Columns of ``SlitGroup.info`` that can define the nod positions.
POSITION_KEYS = ("y_index", "position_number", "shutter_state", "manual_position")

#: Read-only "step on with its default options" value of the seed's ``{}`` defaults
#: (None switches such a step off).
ON = MappingProxyType({})
#: Default of ``extended_calibration_kwargs`` (the seed's).
EXTENDED_CALIBRATION_DEFAULT = MappingProxyType({"threshold": 0.01})


def _frozen_kwargs(value):
    """A read-only private copy of a step's options, or None (step off)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"step options must be a dict or None, got {value!r}")
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class GroupOptions:
    """Every constructor keyword of :class:`~slitcombine.SlitGroup`, as given.

    The fields, their meaning and defaults are those of the constructor (see its
    docstring).  ``*_kwargs`` fields are read-only mappings (a private copy) or None
    (step off); :meth:`step_kwargs` gives a plain ``dict`` copy to pass on.  Building
    the record validates the choices.

    Raises
    ------
    ConfigurationError
        ``weight_type``, ``position_key``, ``undo_barshadow`` or ``bar_corr_mode`` not
        one of their choices, ``trace_with_xpos`` (not implemented), or step options
        that are not a dict or None.
    """

    position_key: str = "y_index"
    diffs: bool = True
    grating_diffs: bool = True
    stuck_threshold: float | None = 0.3
    hot_cold_kwargs: Mapping | None = None
    bad_shutter_names: tuple = ()
    dilate_failed_open: bool | int = True
    num_shutters: int = -1
    undo_barshadow: bool | int = 2
    min_bar: float = 0.4
    bar_corr_mode: str = "wave"
    fix_prism_norm: bool = True
    extended_calibration_kwargs: Mapping | None = field(
        default_factory=lambda: EXTENDED_CALIBRATION_DEFAULT
    )
    with_sflat_correction: bool = True
    with_extra_dq: bool = True
    slit_hotpix_kwargs: Mapping | None = field(default_factory=lambda: ON)
    sky_file: str | None = "read"
    set_background_spectra_kwargs: Mapping | None = field(default_factory=lambda: ON)
    global_sky_df: int = 7
    estimate_sky_kwargs: Mapping | None = None
    flag_profile_kwargs: Mapping | None = None
    do_multiple_mask: bool = True
    flag_trace_kwargs: Mapping | None = field(default_factory=lambda: ON)
    flag_2d_kwargs: Mapping | None = None
    flag_percentile_kwargs: Mapping | None = field(default_factory=lambda: ON)
    undo_pathloss: bool | int = True
    trace_with_xpos: bool = False
    trace_with_ypos: bool = False
    trace_from_yoffset: bool = True
    with_fs_offset: bool = False
    fit_shutter_offset_kwargs: Mapping | None = None
    shutter_offset: float = 0.0
    nod_offset: float | None = None
    pad_border: int = 2
    weight_type: str = "ivm"
    reference_exposure: object = "auto"
    #: Keywords that the constructor does not know (accepted as msaexp does, ignored).
    unknown: Mapping = field(default_factory=dict, compare=False)

    def __post_init__(self):
        for f in fields(self):
            if f.name.endswith("_kwargs"):
                object.__setattr__(self, f.name, _frozen_kwargs(getattr(self, f.name)))
        names = self.bad_shutter_names
        object.__setattr__(self, "bad_shutter_names", tuple(names) if names else ())
        object.__setattr__(self, "unknown", MappingProxyType(dict(self.unknown)))
        if self.weight_type not in nods.WEIGHT_TYPES:
            raise ConfigurationError(
                f"weight_type must be one of {nods.WEIGHT_TYPES}, got {self.weight_type!r}"
            )
        if self.position_key not in POSITION_KEYS:
            raise ConfigurationError(
                f"position_key must be one of {POSITION_KEYS}, got {self.position_key!r}"
            )
        if self.undo_barshadow not in (True, False, 2, 0, 1):
            raise ConfigurationError(
                f"undo_barshadow must be True, False or 2, got {self.undo_barshadow!r}"
            )
        if self.bar_corr_mode not in ("wave", "slit", "flat"):
            raise ConfigurationError(
                f"bar_corr_mode must be 'wave' or 'slit', got {self.bar_corr_mode!r}"
            )
        if self.trace_with_xpos:
            raise ConfigurationError(
                "trace_with_xpos (wavelength correction for the source x position) is not "
                "implemented in slitcombine yet"
            )

    @classmethod
    def keywords(cls):
        """The constructor keywords held by the record (field names but ``unknown``)."""
        return tuple(f.name for f in fields(cls) if f.name != "unknown")

    def step_kwargs(self, keyword):
        """A plain ``dict`` copy of the options of ``keyword`` (None: step off)."""
        value = getattr(self, keyword)
        return None if value is None else dict(value)

    def as_meta(self):
        """The seed's ``meta`` entries of the options: ``{keyword: value}``.

        Step options as plain dicts (each its own copy), ``bad_shutter_names`` as a
        list, the rest as given.
        """
        out = {}
        for name in self.keywords():
            value = getattr(self, name)
            if name.endswith("_kwargs"):
                value = self.step_kwargs(name)
            elif name == "bad_shutter_names":
                value = list(value)
            out[name] = value
        return out


#: One-line description of each ``SlitGroup.meta`` key (msaexp's ``meta_comment``): the
#: header comments of the product's cards.  Copied into every group's ``meta_comment``.
META_COMMENTS = {
    "version": "slitcombine version",
    "name": "Label of the group",
    "position_key": "Method for determining offset groups",
    "diffs": "Calculated with exposure differences",
    "grating_diffs": "Diffs forced for gratings",
    "stuck_threshold": "Stuck-closed shutter threshold",
    "hot_cold_kwargs": "Options of the hot/cold pixel step",
    "bad_shutter_names": "Shutters masked as bad (pitches from the source shutter)",
    "dilate_failed_open": "Dilate the failed-open mask",
    "num_shutters": "Number of shutters used for the bar-shadow model",
    "undo_barshadow": "Bar shadow update behaviour",
    "min_bar": "Minimum allowed bar-shadow value",
    "bar_corr_mode": "Bar-shadow correction type",
    "fix_prism_norm": "Apply the PRISM slit renormalisation",
    "extended_calibration_kwargs": "Options of the extended-range calibration",
    "with_sflat_correction": "Field-dependent s-flat correction",
    "with_extra_dq": "Extra DQ pixel mask",
    "slit_hotpix_kwargs": "Options of the slit hot-pixel step",
    "sky_file": "Filename of a global sky background table",
    "set_background_spectra_kwargs": "Options of the background-spectra step",
    "global_sky_df": "Degrees of freedom of the fit with the global sky",
    "estimate_sky_kwargs": "Options of the sky fit",
    "flag_profile_kwargs": "Options of the profile outlier step",
    "do_multiple_mask": "Mask pixels bad in most exposures",
    "flag_trace_kwargs": "Options of the trace outlier step",
    "flag_2d_kwargs": "Options of the 2D outlier step",
    "flag_percentile_kwargs": "Options of the percentile outlier step",
    "undo_pathloss": "Remove pipeline pathloss correction",
    "trace_with_xpos": "Trace includes x offset in shutter",
    "trace_with_ypos": "Trace includes y offset in shutter",
    "trace_from_yoffset": "Trace derived from y offsets",
    "with_fs_offset": "Extra fixed slit offset",
    "fit_shutter_offset_kwargs": "Options of the shutter-offset fit",
    "shutter_offset": "Global offset to fixed shutter coordinate, pixels",
    "nod_offset": "Nod offset size, pixels",
    "pad_border": "Border padding, pixels",
    "weight_type": "Weighting scheme for 2D combination",
    "reference_exposure": "Reference exposure argument",
    "has_lookup_prf": "A point-response model was given",
    "has_sky_arrays": "Sky arrays specified",
    "nhot": "Number of flagged hot pixels",
    "ncold": "Number of flagged cold pixels",
    "percentile_outliers": "Masked pixels from flag_percentile_outliers",
    "removed_pathloss": "Pipeline pathloss correction removed",
    "own_barshadow": "Internal bar shadow correction applied",
    "wrapped_barshadow": "Bar shadow was wrapped for central shutter",
    "bar_correction": "Bar-shadow model used",
    "slit_pixel_scale": "Pixel scale along the slitlet, arcsec",
    "slit_shutter_scale": "Scale of shutter coordinates per pixel",
    "noise_scale": "Measured noise / propagated sigma",
    "steps": "What every step did",
}
