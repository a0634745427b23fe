"""The least-recently-used store of converted ASDF nodes of :mod:`slitcombine.io._asdf_cache`.

Entries are ``key -> (object, estimated bytes, child keys)``; a commit refreshes the
nodes a conversion used in topological order (every node after its ancestors), so that
eviction, least recent first, never removes a node that a cached one still holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["LRU"]


class LRU:
    """Thread-safe LRU of converted nodes, bounded by entries and estimated bytes."""

    def __init__(self, max_entries, max_bytes):
        self.lock = threading.Lock()
        self.items = OrderedDict()  # key -> (obj, nbytes, child keys)
        self.nbytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hits = self.misses = self.evictions = self.rejected = 0
        self.nodes_seen = self.nodes_converted = 0

    def lookup(self, key):
        """The cached object of ``key`` or None (counts a hit or a miss)."""
        with self.lock:
            item = self.items.get(key)
            if item is None:
                self.misses += 1
                return None
            self.hits += 1
            return item

    def commit(self, roots, new, seen=0, converted=0):
        """Insert ``new`` entries, refresh every node reachable from ``roots``, evict.

        Nodes are refreshed in topological order (every node after all its ancestors),
        so that a node is always more recent than its cached ancestors and eviction
        (least recent first) never removes a node that a cached one still holds.  A new
        node too large for the cache is not inserted, nor are its new ancestors.

        Parameters
        ----------
        roots : list of bytes
            Keys of the cacheable nodes met in the converted tree.
        new : dict
            key -> ``(obj, nbytes, child keys)`` of the nodes converted in this call.
        seen, converted : int
            Tagged nodes in the tree, and those built by a converter in this call.
        """
        with self.lock:
            self.nodes_seen += seen
            self.nodes_converted += converted
            for key in self._topological(roots, new):
                item = self.items.get(key)
                if item is None:
                    item = new[key]
                    self.items[key] = item
                    self.nbytes += item[1]
                else:
                    self.items.move_to_end(key)
            self._evict()

    def _topological(self, roots, new):
        """Keys reachable from ``roots`` that can be cached, ancestors first."""
        ok = {}
        post = []
        for root in roots:
            if root in ok:
                continue
            stack = [(root, False)]
            while stack:
                key, expanded = stack.pop()
                if expanded:
                    item = self.items.get(key) or new.get(key)
                    fits = item is not None and (key in self.items or item[1] <= self.max_bytes)
                    if item is not None and not fits:
                        self.rejected += 1
                    ok[key] = fits and all(ok.get(c, False) for c in item[2])
                    post.append(key)
                    continue
                if key in ok:
                    continue
                ok[key] = False  # visiting (a DAG: no cycles among content keys)
                item = self.items.get(key) or new.get(key)
                stack.append((key, True))
                if item is not None:
                    stack.extend((c, False) for c in item[2] if c not in ok)
        return [k for k in reversed(post) if ok[k]]

    def _evict(self):
        """Drop the least recent entries while a bound is exceeded (lock held)."""
        while self.items and (len(self.items) > self.max_entries or self.nbytes > self.max_bytes):
            _, (_, nbytes, _) = self.items.popitem(last=False)
            self.nbytes -= nbytes
            self.evictions += 1

    def clear(self):
        """Empty the cache and reset its counters."""
        with self.lock:
            self.items.clear()
            self.nbytes = 0
            self.hits = self.misses = self.evictions = self.rejected = 0
            self.nodes_seen = self.nodes_converted = 0
