"""Convert the ASDF tree of a slit WCS once per distinct subtree and process.

The exposures of one source, and the sources of one visit and grating, carry nearly the
same gwcs tree: the NIRSpec instrument model (detector, camera, disperser, collimator,
fore optics, OTE) is shared, only the slit's own models and the pointing differ (CEERS
trio: 1,854 of the 1,917 lines of exposure 1's ASDF YAML are those of exposure 2).
Building the astropy models of a NIRSpec slit WCS costs ~60-250 ms per file, most of it
in ``CompoundModel`` and ``Polynomial`` constructors.

:func:`convert` converts a raw tagged subtree (as parsed by asdf, before its converters
run) bottom-up itself, with asdf's converters, and memoises the result of every tagged
node in a process-wide LRU keyed by the node's *content*:

* the key is a BLAKE2b digest (128 bits) of the node's tag, the converter that handles
  it, the file's ASDF standard version and a canonical serialisation of the node's data
  (types, exact float bits, key order), in which tagged children appear by their own
  digest (a Merkle tree: a node's key changes whenever anything below it changes);
  ndarray nodes stored in binary blocks include the digest of the block's bytes;
* a node is never served from the cache unless its key is complete: nodes whose content
  cannot be serialised (an unknown Python type from the YAML, an array in an external
  file or another FITS extension, a reference cycle, a tag outside the slit WCS's asdf
  plugins) and all their ancestors are converted normally every time;
* ``gwcs`` ``wcs`` and ``step`` nodes are always built anew (cheap: their models and
  frames come from the cache): every :class:`~slitcombine.io.exposure.SlitExposure` owns its
  ``gwcs.WCS`` and pipeline list, so ``insert_frame``, ``set_transform`` or a new step
  on one exposure's WCS never shows in another's.

Shared objects
--------------
The astropy models and coordinate frames inside those WCS objects *are* shared between
exposures (that is the point), and identical subtrees inside one tree become one object
(asdf builds one per occurrence).  Nothing in slitcombine changes a converted model in
place: the reader and :mod:`slitcombine.core.geometry` only evaluate the step transforms.
Code that wants to modify a model in place (set a parameter, ``bounding_box`` or
``inverse``, or ``wcs.bounding_box = ...``, which sets the first transform's bounding
box) must take a ``copy.deepcopy`` of it, or turn the cache off.

Bound
-----
The cache holds at most ``max_entries`` nodes and ``max_bytes`` of *estimated* memory
(:data:`NODE_BYTES` per converted node plus the bytes of its arrays; measured: a
converted CEERS WCS takes 2.7 MB for its 380 distinct tagged nodes, ~7 kB each; 4,000
cached transform nodes held ~4.9 kB each).  Entries are kept in least-recently-used
order with every node *after* its ancestors: a conversion refreshes the nodes it used
and every cached node below them, ancestors first, so eviction always removes a node
before its descendants and an evicted node is never kept alive by a cached one.  The
memory the cache holds is therefore what its estimate counts.  A lock guards the cache;
conversions run outside it (two threads may build the same node at once: the first one
committed is kept).

Switch
------
``SLITCOMBINE_WCS_CACHE`` (read at every conversion): ``0``, ``off``, ``no`` or
``false`` turns the cache off (asdf converts the tree as it always did); a number sets
``max_bytes`` in MiB.  :func:`configure` sets the limits from Python,
:func:`cache_info` reports the counters and :func:`clear` empties the cache.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import pickle
import types
import warnings

import numpy as np

from slitcombine.errors import ConfigurationError
from slitcombine.io._lru import LRU

__all__ = ["convert", "cache_info", "clear", "configure", "enabled", "ENV_VAR"]

log = logging.getLogger(__name__)

#: Environment variable that turns the cache off (``0``) or sets its size in MiB.
ENV_VAR = "SLITCOMBINE_WCS_CACHE"

#: Default bound of the estimated memory held by the cache (bytes): ~10 distinct NIRSpec
#: slit WCS trees; one visit's instrument model takes ~3 MB of it.
DEFAULT_MAX_BYTES = 32 * 1024**2

#: Default bound of the number of cached nodes.
DEFAULT_MAX_ENTRIES = 8192

#: Estimated memory of one converted node without its arrays (bytes): an astropy model
#: with its parameters, or a frame (measured: 2.7 MB for the 380 nodes of a CEERS WCS).
NODE_BYTES = 6 * 1024

#: Tag prefixes whose converters are known to read nothing but their node (and the
#: blocks of their ndarray children): the asdf core arrays, units and transforms,
#: astropy, gwcs and the JWST transforms of stdatamodels.  Other tags are converted
#: every time.
CACHEABLE_TAG_PREFIXES = (
    "tag:stsci.edu:asdf/core/ndarray-",
    "tag:stsci.edu:asdf/core/complex-",
    "tag:stsci.edu:asdf/transform/",
    "tag:stsci.edu:asdf/unit/",
    "tag:stsci.edu:gwcs/",
    "tag:stsci.edu:jwst_pipeline/",
    "tag:astropy.org:astropy/",
    "asdf://asdf-format.org/transform/",
    "asdf://asdf-format.org/astronomy/",
    "asdf://asdf-format.org/core/ndarray-",
    "asdf://astropy.org/",
    "asdf://stsci.edu/jwst_pipeline/",
)

#: Tags converted anew every time (each exposure owns its WCS and pipeline steps).
UNCACHED_TAG_PREFIXES = ("tag:stsci.edu:gwcs/wcs-", "tag:stsci.edu:gwcs/step-")

_NDARRAY_PREFIXES = ("tag:stsci.edu:asdf/core/ndarray-", "asdf://asdf-format.org/core/ndarray-")
_OFF_VALUES = ("0", "off", "no", "false")


def _tagged_ref(key):
    """Stands for a tagged child in a node's serialisation (only pickled, never called)."""
    return key


class _KeyPickler(pickle.Pickler):
    """Pickler of a node's data that writes tagged children as their digest."""

    def __init__(self, buf, keyer, kids):
        super().__init__(buf, protocol=5)
        self.keyer = keyer
        self.kids = kids

    def reducer_override(self, obj):
        # called only for objects that are not exact int/float/str/dict/list...: the
        # Tagged nodes here (anything else, e.g. an OrderedDict, is pickled as usual)
        if isinstance(obj, self.keyer.tagged_type):
            key = self.keyer.digest(obj)
            if key is None:
                raise _Uncacheable
            self.kids.append(key)
            return _tagged_ref, (key,)
        return NotImplemented


class _Uncacheable(Exception):
    """Internal signal: a node's content cannot be keyed (never leaves this module)."""


_CACHE = LRU(DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES)


@functools.cache
def _warn_bad_setting(value):
    """Warn once per process and value about an unreadable :data:`ENV_VAR`."""
    log.warning("%s=%r is neither 0/off nor a size in MiB; cache left on", ENV_VAR, value)


def _env_setting():
    """``(enabled, max_bytes or None)`` from :data:`ENV_VAR`."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return True, None
    if value in _OFF_VALUES:
        return False, None
    try:
        mib = float(value)
    except ValueError:
        _warn_bad_setting(value)
        return True, None
    if not np.isfinite(mib) or mib <= 0:
        return False, None
    return True, int(mib * 1024**2)


def enabled():
    """Whether :func:`convert` uses the cache (:data:`ENV_VAR` is not ``0``/``off``).

    Returns
    -------
    bool
    """
    return _env_setting()[0]


def configure(max_entries=None, max_bytes=None):
    """Set the bounds of the process-wide cache (evicting at once if needed).

    Parameters
    ----------
    max_entries : int, optional
        Maximum number of cached nodes.
    max_bytes : int, optional
        Maximum estimated memory of the cached nodes, bytes.  :data:`ENV_VAR` set to a
        number of MiB takes precedence.

    Raises
    ------
    slitcombine.errors.ConfigurationError
        If a bound is not a positive integer.
    """
    for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise ConfigurationError(f"wcs cache {name} must be a positive integer, not {value!r}")
    with _CACHE.lock:
        if max_entries is not None:
            _CACHE.max_entries = int(max_entries)
        if max_bytes is not None:
            _CACHE.max_bytes = int(max_bytes)
        _CACHE._evict()


def cache_info():
    """Counters and size of the process-wide cache.

    Returns
    -------
    dict
        ``entries``, ``bytes`` (estimated, bytes), ``max_entries``, ``max_bytes``,
        ``hits`` and ``misses`` (look-ups of cacheable nodes; a hit skips the node's
        whole subtree), ``nodes_seen`` and ``nodes_converted`` (tagged nodes of the
        converted trees, and those a converter had to build: ``1 - nodes_converted /
        nodes_seen`` is the fraction of the conversion work saved), ``evictions``,
        ``rejected`` (nodes larger than ``max_bytes``) and ``enabled``.
    """
    with _CACHE.lock:
        return {
            "entries": len(_CACHE.items),
            "bytes": _CACHE.nbytes,
            "max_entries": _CACHE.max_entries,
            "max_bytes": _CACHE.max_bytes,
            "hits": _CACHE.hits,
            "misses": _CACHE.misses,
            "nodes_seen": _CACHE.nodes_seen,
            "nodes_converted": _CACHE.nodes_converted,
            "evictions": _CACHE.evictions,
            "rejected": _CACHE.rejected,
            "enabled": enabled(),
        }


def clear():
    """Empty the process-wide cache and reset its counters."""
    _CACHE.clear()


# ---------------------------------------------------------------------------- keys
class _Keyer:
    """Content digests of the tagged nodes of one raw tree of one open ``AsdfFile``."""

    def __init__(self, af, sctx):
        self.af = af
        self.sctx = sctx
        self.em = af.extension_manager
        self.prefix = f"asdf-standard {af.version_string}|".encode()
        self.keys = {}  # id(tagged node) -> digest, or None when uncacheable
        self.nbytes = {}  # id(tagged node) -> estimated own bytes
        self.children = {}  # id(tagged node) -> tuple of child keys
        self._converter_ids = {}
        self._active = set()
        from asdf import tagged

        self.tagged_type = tagged.Tagged

    def converter_id(self, tag):
        out = self._converter_ids.get(tag)
        if out is None:
            if not self.em.handles_tag(tag):
                out = b""
            else:
                conv = self.em.get_converter_for_tag(tag)
                delegate = getattr(conv, "_delegate", conv)
                ext = getattr(conv, "extension", None)
                out = (
                    f"{type(delegate).__module__}.{type(delegate).__qualname__}|"
                    f"{getattr(ext, 'package_name', '')} {getattr(ext, 'package_version', '')}|"
                ).encode()
            self._converter_ids[tag] = out
        return out

    def serialise(self, data, kids):
        """Canonical bytes of a tagged node's data; tagged children appear as digests.

        A pickle without memo (``fast`` mode: equal content gives equal bytes whatever
        the objects' identities; floats as their exact 8 bytes; dict key order kept),
        in which every tagged child is replaced by a reference to its digest.
        ``kids`` collects those digests.  Raises :class:`_Uncacheable` for content that
        cannot be keyed (an uncacheable child, a reference cycle, an unpicklable type).
        """
        buf = io.BytesIO()
        pickler = _KeyPickler(buf, self, kids)
        pickler.fast = True  # no memo: identity never changes the bytes; cycles fail
        try:
            pickler.dump(data)
        except _Uncacheable:
            raise
        except (pickle.PicklingError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            log.debug("ASDF node not keyed (%s)", exc)
            raise _Uncacheable from exc
        return buf.getvalue()

    def digest(self, node):
        """Digest of a tagged node (memoised per node object), or None if uncacheable."""
        nid = id(node)
        if nid in self.keys:
            return self.keys[nid]
        if nid in self._active:
            self.keys[nid] = None
            return None  # a reference cycle through this node
        tag = node._tag or ""
        self._active.add(nid)
        kids = []
        try:
            if not tag.startswith(CACHEABLE_TAG_PREFIXES):
                raise _Uncacheable
            conv = self.converter_id(tag)
            if not conv:
                raise _Uncacheable  # an unknown tag stays a raw (mutable) node
            own = NODE_BYTES
            h = hashlib.blake2b(digest_size=16)
            for part in (self.prefix, tag.encode(), conv):
                h.update(b"%d:" % len(part))
                h.update(part)
            h.update(self.serialise(node.data, kids))  # a pickle: self-delimiting
            if tag.startswith(_NDARRAY_PREFIXES):
                blob = self._block_digest(node.data)
                if blob is not None:
                    h.update(b"|block:")
                    h.update(blob[0])
                    own += blob[1]
            key = h.digest()
        except _Uncacheable:
            key = None
        finally:
            self._active.discard(nid)
        self.keys[nid] = key
        if key is not None:
            self.nbytes[nid] = own
            self.children[nid] = tuple(dict.fromkeys(kids))
        return key

    def _block_digest(self, data):
        """``(digest, nbytes)`` of the block of an ndarray node, None for inline data."""
        if not isinstance(data, dict) or "source" not in data:
            return None  # inline data (a list, or ``data:``): in the node's token
        source = data["source"]
        if type(source) is not int or source < 0:
            raise _Uncacheable  # an external file, another FITS extension, a stream
        try:
            block = self.sctx.get_block_data_callback(source)(_attr="cached_data")
        except Exception as exc:  # noqa: BLE001 - asdf raises the error again on conversion
            log.debug("ndarray block %s unreadable for the key (%s)", source, exc)
            raise _Uncacheable from exc
        finally:
            self.sctx.assign_object(None)  # forget the access (it was for the key only)
        arr = np.ascontiguousarray(block)
        return hashlib.blake2b(arr.view(np.uint8).data, digest_size=16).digest(), arr.nbytes


# ---------------------------------------------------------------------------- conversion
def _asdf_convert(af, node):
    """asdf's own conversion of a raw tagged subtree (the cache switched off)."""
    from asdf import yamlutil

    return yamlutil.tagged_tree_to_custom_tree(node, af)


def convert(af, node, *, use_cache=None):
    """Convert a raw tagged ASDF subtree to custom objects, reusing cached conversions.

    Parameters
    ----------
    af : asdf.AsdfFile
        The open file the node was read from (its extensions, blocks and ASDF version).
    node : object
        A raw node of ``af``'s tagged tree (e.g. the ``TaggedDict`` of ``meta.wcs``);
        an already converted object is returned as it is.
    use_cache : bool, optional
        False converts with asdf alone (as without this module); default: the cache is
        used unless :data:`ENV_VAR` turns it off.

    Returns
    -------
    object
        The converted object (a ``gwcs.WCS`` for a WCS node): the same numbers as
        ``asdf.yamlutil.tagged_tree_to_custom_tree(node, af)``, sharing the astropy
        models of identical subtrees with earlier conversions in the process.
    """
    from asdf import tagged

    if not isinstance(node, (tagged.Tagged, dict, list)):
        return node
    on, max_bytes = _env_setting()
    if use_cache is None:
        use_cache = on
    if not use_cache:
        return _asdf_convert(af, node)
    if max_bytes is not None and max_bytes != _CACHE.max_bytes:
        configure(max_bytes=max_bytes)
    try:
        from asdf.extension._serialization_context import BlockAccess

        sctx = af._create_serialization_context(BlockAccess.READ)
        keyer = _Keyer(af, af._create_serialization_context(BlockAccess.READ))
    except (AttributeError, ImportError, TypeError) as exc:
        # another asdf version without these internals: convert as asdf does
        log.debug("asdf internals not found (%s): WCS conversion not cached", exc)
        return _asdf_convert(af, node)
    try:
        return _Converter(af, sctx, keyer).run(node)
    except _CycleError:
        log.debug("the tree refers to itself: converted by asdf, not cached")
        return _asdf_convert(af, node)


class _Converter:
    """One bottom-up conversion of a raw tree with the cache (see :func:`convert`)."""

    def __init__(self, af, sctx, keyer):
        self.af = af
        self.sctx = sctx
        self.keyer = keyer
        self.em = af.extension_manager
        self.memo = {}  # id(raw node) -> converted object (aliases stay one object)
        self.generators = []
        self.new = {}  # key -> (obj, nbytes, child keys) converted in this call
        self.order = []  # keys in pre-order, for the cache's recency
        self.active = set()
        self.n_hit = self.n_new = self.n_plain = self.n_unkeyed = 0

    def run(self, node):
        obj = self.conv(node)
        # asdf drains the converters' generators (e.g. setting ``model.inverse``) after
        # the whole tree is built; new objects enter the cache only once complete.
        while self.generators:
            gens, self.generators = self.generators, []
            for gen in gens:
                for _ in gen:
                    pass
        seen = len(self.keyer.keys) + self.n_unkeyed
        converted = self.n_new + self.n_plain
        _CACHE.commit(self.order, self.new, seen, converted)
        log.debug(
            "ASDF tree converted: %d of %d tagged nodes built (%d cached subtrees reused, "
            "%d nodes not cacheable)",
            converted,
            seen,
            self.n_hit,
            self.n_plain,
        )
        return obj

    def conv(self, node):
        from asdf import tagged

        nid = id(node)
        if nid in self.memo:
            return self.memo[nid]
        if nid in self.active:
            raise _CycleError
        if isinstance(node, tagged.Tagged):
            out = self.conv_tagged(node)
        elif isinstance(node, dict):
            self.active.add(nid)
            out = node.__class__()
            for k, v in node.items():
                out[k] = self.conv(v)
            self.active.discard(nid)
        elif isinstance(node, list):
            self.active.add(nid)
            out = [self.conv(v) for v in node]
            self.active.discard(nid)
        else:
            return node
        self.memo[nid] = out
        return out

    def conv_tagged(self, node):
        from asdf import tagged
        from asdf.exceptions import AsdfConversionWarning

        nid = id(node)
        tag = node._tag
        key = None
        if tag.startswith(UNCACHED_TAG_PREFIXES):
            self.n_unkeyed += 1
        else:
            key = self.keyer.digest(node)
        if key is not None:
            self.order.append(key)
            item = self.new.get(key) or _CACHE.lookup(key)
            if item is not None:
                self.n_hit += 1
                return item[0]
        self.active.add(nid)
        if isinstance(node, tagged.TaggedDict):
            data = {k: self.conv(v) for k, v in node.data.items()}
        elif isinstance(node, tagged.TaggedList):
            data = [self.conv(v) for v in node.data]
        else:
            data = node.data
        self.active.discard(nid)
        if not self.em.handles_tag(tag):
            if not getattr(self.af, "_ignore_unrecognized_tag", False):
                warnings.warn(
                    f"{tag} is not recognized, converting to raw Python data structure",
                    AsdfConversionWarning,
                    stacklevel=2,
                )
            out = tagged.tag_object(tag, data)
            self.n_plain += 1
            return out
        converter = self.em.get_converter_for_tag(tag)
        obj = converter.from_yaml_tree(data, tag, self.sctx)
        if isinstance(obj, types.GeneratorType):
            gen = obj
            obj = next(gen)
            self.generators.append(gen)
        self.sctx.assign_object(obj)
        self.sctx.assign_blocks()
        self.sctx._mark_extension_used(converter.extension)
        if key is None:
            self.n_plain += 1
            return obj
        if tag.startswith(_NDARRAY_PREFIXES):
            np.asarray(obj)  # load the block now: the cached array outlives the file
        self.new[key] = (obj, self.keyer.nbytes[nid], self.keyer.children[nid])
        self.n_new += 1
        return obj


class _CycleError(Exception):
    """Internal signal: the tree refers to itself (never leaves this module)."""
