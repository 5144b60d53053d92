"""Who has to talk to whom: collectives run on simulated ranks, and the α-β cost of the traffic of
training and of inference (chapter "Networking").

Sources of the algorithms and formulas:

* Ring all-reduce (a reduce-scatter then an all-gather, each n−1 steps of one chunk of S/n bytes to
  the next rank) sends 2(n−1)/n·S bytes per rank, the least an all-reduce can send when the ranks
  themselves do the adding [patarasuk2009bandwidth]. A switch that adds (NVIDIA's NVLink SHARP,
  InfiniBand SHARP) lets each rank send its S bytes once and receive the sum once
  [graham2016sharp]: the "in_network" algorithm.
* One-shot and two-shot all-reduces, the small-message kernels of serving stacks: one-shot sends
  each rank's whole buffer to every peer in one round; two-shot is a direct reduce-scatter then a
  direct all-gather, two rounds [nvidia2024multishot].
* A binary-tree all-reduce reduces up a tree and broadcasts down it, in 2·⌊log₂ n⌋ rounds, with one
  tree edge across the middle of the rank order; pipelined over two complementary trees (NCCL's
  double binary tree) each rank sends and receives about 2·S [sanders2009two].
* Recursive halving then doubling is Rabenseifner's algorithm (log₂ n steps
  each way) as described by [thakur2005optimization], whose α-β costs are used here: a message of m
  bytes costs α + m/B. For rank counts that are not powers of two this module folds the extra ranks
  in with whole buffers, a simpler variant of the paper's half-buffer exchange.
* The bus bandwidth of NVIDIA's nccl-tests, busbw = algbw · 2(n−1)/n with algbw = S/t, is the per-rank
  link speed an all-reduce of S bytes in t seconds implies [nccltests2024performance].
* Megatron-style tensor parallelism splits each MLP and attention block across ranks so that each
  needs one all-reduce of the activations in the forward pass and one in the backward pass: two per
  layer each way [shoeybi2019megatron].
* Training compute is 6·N FLOP per token [kaplan2020scaling] (:func:`chipbook.market.training_flops`).
* NCCL's own cost model, ``time = base latency + steps · hop latency + bytes / bandwidth``
  [nvidia2026nccltuning], is the α-β model of :func:`allreduce_time` with ``overhead`` the base
  latency and ``latency`` the per-step hop latency.

A simulation returns a :class:`Traffic`: every rank's result and the bytes each rank sent to each
other rank in each round (and, for in-network reduction, to and from the switch). :func:`round_time`
prices a round on a topology (a switch, an oversubscribed fat tree, a torus, a ring, a chain or a
full mesh of direct links), so the closed forms of :func:`allreduce_time` can be checked against the
simulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chipbook import _checks, market

ALGORITHMS = ("ring", "halving_doubling", "tree", "one_shot", "two_shot", "in_network", "naive")
TOPOLOGIES = ("switch", "fat_tree", "torus", "ring", "chain", "mesh")
#: All-reduces per transformer layer with Megatron tensor parallelism: one after attention and one
#: after the MLP in the forward pass, and the same two in the backward pass [shoeybi2019megatron].
TP_ALLREDUCES_PER_LAYER = {"forward": 2, "backward": 2}


@dataclass(frozen=True)
class Traffic:
    """What a simulated communication did: ``result[r]`` is rank r's output, ``rounds[k, i, j]``
    the bytes rank i sent to rank j in round k (rounds run one after the other; the messages of one
    round travel at the same time)."""

    result: np.ndarray
    rounds: np.ndarray
    #: ``up[k, i]``: bytes rank i sent into a reducing switch in round k; ``down[k, i]``: bytes the
    #: switch sent (multicast) to rank i. Zero except for in-network reduction.
    up: np.ndarray | None = None
    down: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = self.rounds.shape[:2]
        for name in ("up", "down"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.zeros(shape, dtype=np.int64))

    @property
    def ranks(self) -> int:
        return self.rounds.shape[1]

    @property
    def steps(self) -> int:
        return self.rounds.shape[0]

    @property
    def matrix(self) -> np.ndarray:
        """Bytes sent from rank i (row) to rank j (column), all rounds together."""
        return self.rounds.sum(axis=0)

    @property
    def sent(self) -> np.ndarray:
        """Bytes each rank sent, to other ranks and into a reducing switch."""
        return self.matrix.sum(axis=1) + self.up.sum(axis=0)

    def placed(self, position: Sequence[int]) -> Traffic:
        """The same traffic with rank r running on chip ``position[r]`` of a topology: the order in
        which ranks are laid on a chain, a ring or a torus decides how far their messages travel."""
        position = np.asarray(position, dtype=int)
        if sorted(position.tolist()) != list(range(self.ranks)):
            raise ValueError(f"position must be a permutation of 0..{self.ranks - 1}, "
                             f"got {position.tolist()}")
        rounds = np.zeros_like(self.rounds)
        rounds[:, position[:, None], position[None, :]] = self.rounds
        up, down = np.zeros_like(self.up), np.zeros_like(self.down)
        up[:, position], down[:, position] = self.up, self.down
        return Traffic(result=self.result[np.argsort(position)], rounds=rounds, up=up, down=down)

    @property
    def received(self) -> np.ndarray:
        """Bytes each rank received, from other ranks and from a reducing switch."""
        return self.matrix.sum(axis=0) + self.down.sum(axis=0)


class _Recorder:
    """Collects the rounds of a simulation."""

    def __init__(self, ranks: int):
        self.ranks = ranks
        self.rounds: list[np.ndarray] = []
        self.up: list[np.ndarray] = []
        self.down: list[np.ndarray] = []

    def new_round(self) -> np.ndarray:
        self.rounds.append(np.zeros((self.ranks, self.ranks), dtype=np.int64))
        self.up.append(np.zeros(self.ranks, dtype=np.int64))
        self.down.append(np.zeros(self.ranks, dtype=np.int64))
        return self.rounds[-1]

    def traffic(self, result: np.ndarray) -> Traffic:
        if not self.rounds:
            empty = np.zeros((0, self.ranks), np.int64)
            return Traffic(result=result, rounds=np.zeros((0, self.ranks, self.ranks), np.int64),
                           up=empty, down=empty)
        return Traffic(result=result, rounds=np.array(self.rounds), up=np.array(self.up),
                       down=np.array(self.down))


def _buffers(buffers) -> np.ndarray:
    arr = np.asarray(buffers)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"buffers must be a 2-D array (ranks × elements) with at least one of each, "
                         f"got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"buffers must hold numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError("buffers must be finite")
    return arr.copy()


def ring_allreduce(buffers) -> Traffic:
    """All-reduce (sum) of ``buffers[r]`` over ranks r = 0…n−1 arranged in a ring.

    Each buffer is cut into n chunks. Reduce-scatter: in step s, rank r sends its running sum of
    chunk (r − s) mod n to rank r+1, which adds its own; after n−1 steps rank r holds the full sum of
    chunk (r+1) mod n. All-gather: n−1 more steps pass the finished chunks on round the ring
    [patarasuk2009bandwidth].
    """
    data = _buffers(buffers)
    n = data.shape[0]
    bounds = np.linspace(0, data.shape[1], n + 1).round().astype(int)
    chunk = [slice(bounds[c], bounds[c + 1]) for c in range(n)]
    rec = _Recorder(n)
    item = data.itemsize
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(n - 1):
            sent = rec.new_round()
            offset = s if phase == "reduce-scatter" else s - 1
            messages = [(r, (r - offset) % n) for r in range(n)]
            payload = [data[r, chunk[c]].copy() for r, c in messages]  # all sends leave at once
            for (r, c), values in zip(messages, payload, strict=True):
                dest = (r + 1) % n
                if phase == "reduce-scatter":
                    data[dest, chunk[c]] += values
                else:
                    data[dest, chunk[c]] = values
                sent[r, dest] += values.size * item
    return rec.traffic(data)


def halving_doubling_allreduce(buffers) -> Traffic:
    """All-reduce (sum) by recursive halving (a reduce-scatter) then recursive doubling (an
    all-gather): Rabenseifner's algorithm as described by [thakur2005optimization].

    With p the largest power of two ≤ n, the n − p extra ranks first send their whole buffer to a
    partner (ranks 2i and 2i+1 for i < n − p; the even one drops out) and get the result back at the
    end; the paper exchanges half buffers there, whole ones keep this simple. Among the p remaining
    ranks, in the step at distance d = p/2, p/4, …, 1 each rank swaps half of its current segment
    with the rank d away and keeps the sum of the other half; the doubling steps retrace the same
    pairs in reverse, swapping finished segments.
    """
    data = _buffers(buffers)
    n, size = data.shape
    item = data.itemsize
    rec = _Recorder(n)
    p = 1 << (n.bit_length() - 1)
    extra = n - p
    if extra:
        sent = rec.new_round()
        for i in range(extra):
            data[2 * i + 1] += data[2 * i]
            sent[2 * i, 2 * i + 1] += size * item
    active = [2 * i + 1 for i in range(extra)] + list(range(2 * extra, n))  # p ranks, by virtual rank
    segment = {v: (0, size) for v in range(p)}
    history = []
    d = p // 2
    while d >= 1:
        sent = rec.new_round()
        updates = {}
        for v in range(p):
            lo, hi = segment[v]
            mid = (lo + hi) // 2
            keep, give = ((lo, mid), (mid, hi)) if v & d == 0 else ((mid, hi), (lo, mid))
            partner = v ^ d
            updates[v] = keep
            sent[active[v], active[partner]] += (give[1] - give[0]) * item
        incoming = {v: data[active[v ^ d], slice(*updates[v])].copy() for v in range(p)}
        for v in range(p):
            data[active[v], slice(*updates[v])] += incoming[v]
        history.append((d, dict(segment)))
        segment = updates
        d //= 2
    for d, before in reversed(history):
        sent = rec.new_round()
        payload = {v: data[active[v], slice(*segment[v])].copy() for v in range(p)}
        for v in range(p):
            partner = v ^ d
            data[active[partner], slice(*segment[v])] = payload[v]
            sent[active[v], active[partner]] += (segment[v][1] - segment[v][0]) * item
        segment = before
    if extra:
        sent = rec.new_round()
        for i in range(extra):
            data[2 * i] = data[2 * i + 1]
            sent[2 * i + 1, 2 * i] += size * item
    return rec.traffic(data)


def naive_allreduce(buffers, root: int = 0) -> Traffic:
    """All-reduce (sum) through one rank: every other rank sends its whole buffer to ``root``, which
    adds them and sends the sum back to each (a parameter server). Every byte crosses the root's link."""
    data = _buffers(buffers)
    n, size = data.shape
    root = _checks.count("root", root, minimum=0)
    if root >= n:
        raise ValueError(f"root must be a rank in 0…{n - 1}, got {root}")
    item = data.itemsize
    rec = _Recorder(n)
    others = [r for r in range(n) if r != root]
    if others:
        sent = rec.new_round()
        for r in others:
            data[root] += data[r]
            sent[r, root] += size * item
        sent = rec.new_round()
        for r in others:
            data[r] = data[root]
            sent[root, r] += size * item
    return rec.traffic(data)


def one_shot_allreduce(buffers) -> Traffic:
    """All-reduce (sum) in one round: every rank sends its whole buffer to every other rank and adds
    what it receives, the one-shot kernel of serving stacks for small messages
    [nvidia2024multishot]. Each rank sends (n−1)·S bytes, to n−1 peers at once."""
    data = _buffers(buffers)
    n, size = data.shape
    rec = _Recorder(n)
    if n > 1:
        sent = rec.new_round()
        sent[:] = size * data.itemsize
        np.fill_diagonal(sent, 0)
        data[:] = data.sum(axis=0)
    return rec.traffic(data)


def two_shot_allreduce(buffers) -> Traffic:
    """All-reduce (sum) in two rounds: a direct reduce-scatter (rank c receives chunk c of every
    buffer and adds them) then a direct all-gather (rank c sends its finished chunk to every other)
    [nvidia2024multishot]; NVIDIA's MultiShot multicasts the all-gather from the switch instead,
    which this does not model. Each rank sends 2(n−1)/n·S bytes, like the ring, in 2 rounds, not 2(n−1)."""
    data = _buffers(buffers)
    n, size = data.shape
    rec = _Recorder(n)
    if n == 1:
        return rec.traffic(data)
    bounds = np.linspace(0, size, n + 1).round().astype(int)
    item = data.itemsize
    scatter, gather = rec.new_round(), rec.new_round()
    for c in range(n):
        part = slice(bounds[c], bounds[c + 1])
        width = (bounds[c + 1] - bounds[c]) * item
        scatter[:, c] = width
        gather[c, :] = width
        data[:, part] = data[:, part].sum(axis=0)
    np.fill_diagonal(scatter, 0)
    np.fill_diagonal(gather, 0)
    return rec.traffic(data)


def in_network_allreduce(buffers) -> Traffic:
    """All-reduce (sum) with the adding done in the switch (NVLink SHARP, InfiniBand SHARP
    [graham2016sharp]): in one round every rank sends its buffer up and the switch adds them; in the
    next the switch multicasts the sum to every rank. Each rank sends S and receives S; pipelined in
    chunks, the two rounds overlap (see :func:`allreduce_time`)."""
    data = _buffers(buffers)
    n, size = data.shape
    rec = _Recorder(n)
    if n > 1:
        rec.new_round()
        rec.up[-1][:] = size * data.itemsize
        rec.new_round()
        rec.down[-1][:] = size * data.itemsize
        data[:] = data.sum(axis=0)
    return rec.traffic(data)


def binary_tree(ranks: int) -> np.ndarray:
    """Parent of each rank in a balanced binary tree laid out in order (rank r's left subtree holds
    the ranks below r, its right subtree those above), as NCCL builds its trees [sanders2009two]:
    the root is the middle rank and only one tree edge joins the lower half of the ranks to the
    upper half. The root's parent is −1. Its height is ⌊log₂ n⌋."""
    n = _checks.count("ranks", ranks)
    parent = np.full(n, -1)

    def build(lo: int, hi: int, up: int) -> None:
        if lo > hi:
            return
        mid = (lo + hi) // 2
        parent[mid] = up
        build(lo, mid - 1, mid)
        build(mid + 1, hi, mid)

    build(0, n - 1, -1)
    return parent


def tree_allreduce(buffers) -> Traffic:
    """All-reduce (sum) on the binary tree of :func:`binary_tree`, whole buffers at a time: a rank
    of height h (leaves 0) sends its subtree's sum to its parent in round h; then the root's total
    goes down, a rank at depth δ sending it to its children in round H + δ (H the tree's height).
    2H = 2⌊log₂ n⌋ rounds; a leaf sends S, an inner rank up to 3·S (NCCL pipelines this over two
    complementary trees so that each rank sends about 2·S [sanders2009two])."""
    data = _buffers(buffers)
    n, size = data.shape
    parent = binary_tree(n)
    item = data.itemsize
    depth = np.array([_depth(parent, r) for r in range(n)])
    height = np.zeros(n, dtype=int)
    for r in sorted(range(n), key=lambda r: -depth[r]):
        if parent[r] >= 0:
            height[parent[r]] = max(height[parent[r]], height[r] + 1)
    top = int(height.max()) if n > 1 else 0
    rec = _Recorder(n)
    for h in range(top):
        sent = rec.new_round()
        for r in np.flatnonzero((height == h) & (parent >= 0)):
            data[parent[r]] += data[r]
            sent[r, parent[r]] += size * item
    for delta in range(top):
        sent = rec.new_round()
        for r in np.flatnonzero(depth == delta + 1):
            data[r] = data[parent[r]]
            sent[parent[r], r] += size * item
    return rec.traffic(data)


def _depth(parent: np.ndarray, r: int) -> int:
    d = 0
    while parent[r] >= 0:
        r, d = parent[r], d + 1
    return d


ALLREDUCE = {"ring": ring_allreduce, "halving_doubling": halving_doubling_allreduce, "tree": tree_allreduce,
             "one_shot": one_shot_allreduce, "two_shot": two_shot_allreduce,
             "in_network": in_network_allreduce, "naive": naive_allreduce}


def allreduce(buffers, algorithm: str) -> Traffic:
    """Run the all-reduce ``algorithm`` (one of :data:`ALGORITHMS`) on ``buffers``."""
    return ALLREDUCE[_checks.choice("algorithm", algorithm, ALGORITHMS)](buffers)


def pipeline_forward(x, weights: Sequence[np.ndarray], stages: int) -> Traffic:
    """Run a stack of ReLU layers ``x ← max(0, x @ W)`` split into ``stages`` contiguous groups,
    one per rank (pipeline parallelism): each stage sends its output activations to the next stage
    only. ``result[s]`` is the activation stage s holds at the end (the output on the last stage)."""
    x = np.asarray(x)
    stages = _checks.count("stages", stages)
    if len(weights) < stages:
        raise ValueError(f"stages must be at most the number of layers ({len(weights)}), got {stages}")
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (batch × width), got shape {x.shape}")
    rec = _Recorder(stages)
    held = [np.zeros_like(x) for _ in range(stages)]
    groups = np.array_split(np.arange(len(weights)), stages)
    for s, layers in enumerate(groups):
        for i in layers:
            x = np.maximum(0, x @ weights[i])
        held[s] = x
        if s < stages - 1:
            rec.new_round()[s, s + 1] += x.nbytes
    return rec.traffic(np.array(held))


def tensor_parallel_mlp(x, w_in, w_out, ranks: int) -> Traffic:
    """One Megatron MLP block, ``max(0, x @ w_in) @ w_out``, on ``ranks`` ranks [shoeybi2019megatron]:
    ``w_in`` split by columns and ``w_out`` by rows, so each rank computes a partial output with no
    communication and one ring all-reduce sums the partials. Every rank ends with the full output."""
    x, w_in, w_out = (np.asarray(a) for a in (x, w_in, w_out))
    ranks = _checks.count("ranks", ranks)
    if w_in.shape[1] < ranks:
        raise ValueError(f"ranks must be at most the hidden width {w_in.shape[1]}, got {ranks}")
    cols = np.array_split(np.arange(w_in.shape[1]), ranks)
    partial = np.array([np.maximum(0, x @ w_in[:, c]) @ w_out[c, :] for c in cols])
    reduced = ring_allreduce(partial.reshape(ranks, -1))
    return Traffic(result=reduced.result.reshape(partial.shape), rounds=reduced.rounds)


# --- pricing a round on a topology --------------------------------------------------------------------


def link_loads(sent: np.ndarray, topology: str, *, shape: Sequence[int] | None = None, group: int = 8,
               oversubscription: float = 1.0, up: np.ndarray | None = None,
               down: np.ndarray | None = None) -> np.ndarray:
    """Load on every directed link, in bytes per unit of one rank's link bandwidth, when the
    messages ``sent[i, j]`` of one round travel together over ``topology``.

    * ``switch``: every rank has one link up to a non-blocking (full-bisection) switch and one down;
      a link carries all that its rank sends, or all that it receives. ``up``/``down`` (bytes into
      and out of a reducing switch) load the same links.
    * ``fat_tree``: the same, with the ranks in leaf switches of ``group`` ranks whose uplinks carry
      ``group / oversubscription`` links' worth: an oversubscribed fat tree (1:1 is non-blocking, a
      full fat tree; 2:1 halves the bandwidth that leaves a leaf).
    * ``torus``: ranks on a torus of ``shape`` (row-major ranks; a 2-D or 3-D torus as in TPU pods
      [jouppi2023tpuv4]), one link each way to each neighbour in each dimension; messages go
      dimension by dimension, the shorter way round (the positive way on a tie).
    * ``ring``: rank r is wired to r ± 1 (mod n), full duplex: a one-dimensional torus.
    * ``chain``: the ring without the link from n−1 back to 0: a line of chips.
    * ``mesh``: a direct link between every pair (a direct-connect fabric with no switch, such as a
      node of chips cabled to one another); the link from i to j carries ``sent[i, j]``.
    """
    sent = np.asarray(sent)
    topology = _checks.choice("topology", topology, TOPOLOGIES)
    n = sent.shape[0]
    up = np.zeros(n) if up is None else np.asarray(up)
    down = np.zeros(n) if down is None else np.asarray(down)
    if topology not in ("switch", "fat_tree") and (up.any() or down.any()):
        raise ValueError(f"topology must be 'switch' or 'fat_tree' for in-network reduction, "
                         f"got {topology!r}")
    own = np.concatenate([sent.sum(axis=1) + up, sent.sum(axis=0) + down])
    if topology == "switch":
        return own
    if topology == "fat_tree":
        group = _checks.count("group", group)
        oversubscription = float(_checks.positive("oversubscription", oversubscription))
        leaf = np.arange(n) // group
        leaves = int(leaf.max()) + 1
        out, into = np.zeros(leaves), np.zeros(leaves)
        for i, j in zip(*np.nonzero(sent), strict=True):
            if leaf[i] != leaf[j]:
                out[leaf[i]] += sent[i, j]
                into[leaf[j]] += sent[i, j]
        for k in range(leaves):  # a reducing switch tree sends one partial sum per leaf up and down
            members = leaf == k
            out[k] += up[members].max(initial=0) if leaves > 1 else 0
            into[k] += down[members].max(initial=0) if leaves > 1 else 0
        capacity = group / oversubscription
        return np.concatenate([own, out / capacity, into / capacity])
    if topology == "mesh":
        return sent[~np.eye(n, dtype=bool)].astype(float)
    if topology == "chain":
        return _chain_loads(sent)
    dims = (n,) if topology == "ring" else _torus_shape(shape, n)
    return _torus_loads(sent, dims)


def _torus_shape(shape: Sequence[int] | None, n: int) -> tuple[int, ...]:
    if shape is None:
        raise ValueError("shape must be given for a torus, e.g. (4, 4)")
    dims = tuple(_checks.count("shape", k) for k in shape)
    if math.prod(dims) != n:
        raise ValueError(f"shape must multiply to the number of ranks {n}, got {tuple(shape)}")
    return dims


def _torus_loads(sent: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    n = sent.shape[0]
    loads = np.zeros((len(dims), 2, n))  # [dimension, + or − direction, node the link leaves]
    for i, j in zip(*np.nonzero(sent), strict=True):
        here = list(np.unravel_index(i, dims))
        there = np.unravel_index(j, dims)
        for axis, size in enumerate(dims):
            forward = (int(there[axis]) - here[axis]) % size
            step, hops = (1, forward) if forward <= size - forward else (-1, size - forward)
            for _ in range(hops):
                loads[axis, 0 if step > 0 else 1, np.ravel_multi_index(here, dims)] += sent[i, j]
                here[axis] = (here[axis] + step) % size
    return loads.ravel()


def _chain_loads(sent: np.ndarray) -> np.ndarray:
    n = sent.shape[0]
    right = np.zeros(n)  # link r -> r+1
    left = np.zeros(n)   # link r+1 -> r
    for i, j in zip(*np.nonzero(sent), strict=True):
        links, hops = (right, range(i, j)) if j > i else (left, range(j, i))
        for h in hops:
            links[h] += sent[i, j]
    return np.concatenate([right, left])


def links_per_chip(topology: str, ranks: int, *, shape: Sequence[int] | None = None) -> int:
    """Links (each way) over which one chip's bandwidth is spread on ``topology``: 1 into a switch or
    a fat tree's leaf, 2 on a ring or a chain, 2 per dimension on a torus, n − 1 on a full mesh."""
    topology = _checks.choice("topology", topology, TOPOLOGIES)
    n = _checks.count("ranks", ranks)
    if topology in ("switch", "fat_tree"):
        return 1
    if topology == "mesh":
        return max(1, n - 1)
    if topology in ("ring", "chain"):
        return 2
    return 2 * len(_torus_shape(shape, n))


def hops(sent: np.ndarray, topology: str, *, shape: Sequence[int] | None = None, **_where) -> int:
    """Most links any message of the round ``sent[i, j]`` crosses on ``topology``: 1 through a switch
    (its leaf or spine counted as one hop) or a direct link, |i − j| on a chain, the shorter way
    round on a ring, the sum over dimensions on a torus; 0 for a round that sends nothing."""
    sent = np.asarray(sent)
    topology = _checks.choice("topology", topology, TOPOLOGIES)
    n = sent.shape[0]
    pairs = list(zip(*np.nonzero(sent), strict=True))
    if not pairs:
        return 0
    if topology in ("switch", "fat_tree", "mesh"):
        return 1
    if topology == "chain":
        return max(abs(int(i) - int(j)) for i, j in pairs)
    dims = (n,) if topology == "ring" else _torus_shape(shape, n)
    most = 0
    for i, j in pairs:
        a, b = np.unravel_index(i, dims), np.unravel_index(j, dims)
        most = max(most, sum(min((int(y) - int(x)) % k, (int(x) - int(y)) % k)
                             for x, y, k in zip(a, b, dims, strict=True)))
    return most


def round_time(sent: np.ndarray, topology: str, bandwidth: float, latency: float, *,
               hop_latency: float = 0.0, per_chip: bool = False, **where) -> float:
    """Seconds for one round: the latency α, plus ``hop_latency`` for every link beyond the first
    that the farthest message crosses, plus the busiest link's bytes over its bandwidth
    [thakur2005optimization]. ``bandwidth`` (bytes/s, per direction) is one link's, or, with
    ``per_chip``, one chip's, spread evenly over its :func:`links_per_chip` links, so that
    topologies are compared at equal injection bandwidth. A round that sends nothing costs
    nothing. ``where`` passes the topology's keywords to :func:`link_loads`."""
    bandwidth = _checks.positive("bandwidth", bandwidth)
    latency = _checks.non_negative("latency", latency)
    hop_latency = _checks.non_negative("hop_latency", hop_latency)
    loads = link_loads(sent, topology, **where)
    if not loads.any():
        return 0.0
    n = np.asarray(sent).shape[0]
    if per_chip:
        bandwidth = bandwidth / links_per_chip(topology, n, shape=where.get("shape"))
    extra = hop_latency * max(0, hops(sent, topology, **where) - 1)
    return latency + extra + float(loads.max()) / bandwidth


def simulated_time(traffic: Traffic, topology: str, bandwidth: float, latency: float, *,
                   hop_latency: float = 0.0, per_chip: bool = False, **where) -> float:
    """Seconds for all the rounds of ``traffic``, one after the other, on ``topology``
    (:func:`round_time`)."""
    return sum(round_time(r, topology, bandwidth, latency, hop_latency=hop_latency, per_chip=per_chip,
                          up=u, down=d, **where)
               for r, u, d in zip(traffic.rounds, traffic.up, traffic.down, strict=True))


def bisection_bytes(sent: np.ndarray) -> float:
    """Bytes that cross between the lower and the upper half of the ranks (both ways together)."""
    sent = np.asarray(sent)
    half = sent.shape[0] // 2
    return float(sent[:half, half:].sum() + sent[half:, :half].sum())


# --- closed forms -------------------------------------------------------------------------------------


def allreduce_time(nbytes: float, ranks: int, bandwidth: float, latency: float,
                   algorithm: str = "ring", *, overhead: float = 0.0) -> float:
    """α-β time of an all-reduce of ``nbytes`` bytes over ``ranks`` ranks, each with ``bandwidth``
    bytes/s per direction to a non-blocking switch, ``latency`` α seconds per round (step) and a
    fixed ``overhead`` per collective (kernel launch and synchronisation: NCCL's "base latency"
    [nvidia2026nccltuning]) [thakur2005optimization]:

    * ring: 2(n−1)·α + 2(n−1)/n · S/B;
    * halving_doubling: 2·log₂p·α + 2(p−1)/p · S/B for n = p a power of two; otherwise two more
      steps of α + S/B (the extra ranks' whole buffers, in and out);
    * tree: 2·⌊log₂ n⌋·α + 2·S/B: a chunk climbs the tree and comes back down; pipelined over two
      complementary binary trees each rank sends and receives about 2·S [sanders2009two];
    * one_shot: α + (n−1)·S/B: one round, each rank's link carries its buffer to n−1 peers;
    * two_shot: 2·α + 2(n−1)/n · S/B: a direct reduce-scatter and a direct all-gather;
    * in_network: 2·α + S/B: S up to a reducing switch and the sum back down, the two overlapping
      when pipelined [graham2016sharp];
    * naive: 2·(α + (n−1)·S/B): the root's link carries every buffer in, then every result out.

    Chunks are taken as exactly S/n (S/p) bytes; the simulations cut whole elements, so they differ
    by at most one element per message. Tree and in-network forms are the pipelined limits; the
    simulations send whole buffers and show the rounds and the pattern.
    """
    nbytes = _checks.non_negative("nbytes", nbytes)
    n = _checks.count("ranks", ranks)
    bandwidth = _checks.positive("bandwidth", bandwidth)
    latency = _checks.non_negative("latency", latency)
    overhead = _checks.non_negative("overhead", overhead)
    algorithm = _checks.choice("algorithm", algorithm, ALGORITHMS)
    if n == 1 or nbytes == 0:
        return 0.0
    rounds, volume = alpha_beta_terms(n, algorithm)
    return overhead + rounds * latency + volume * nbytes / bandwidth


def alpha_beta_terms(n: int, algorithm: str) -> tuple[float, float]:
    """The rounds, and the bytes on the busiest link in units of S, of :func:`allreduce_time`'s
    ``algorithm`` on n > 1 ranks: its time is overhead + rounds·α + bytes·S/B."""
    n = _checks.count("n", n, minimum=2)
    algorithm = _checks.choice("algorithm", algorithm, ALGORITHMS)
    if algorithm == "ring":
        return 2 * (n - 1), 2 * (n - 1) / n
    if algorithm == "tree":
        return 2 * (n.bit_length() - 1), 2.0
    if algorithm == "one_shot":
        return 1, n - 1
    if algorithm == "two_shot":
        return 2, 2 * (n - 1) / n
    if algorithm == "in_network":
        return 2, 1.0
    if algorithm == "naive":
        return 2, 2 * (n - 1)
    p = 1 << (n.bit_length() - 1)
    rounds, volume = 2 * math.log2(p), 2 * (p - 1) / p
    return (rounds, volume) if p == n else (rounds + 2, volume + 2)


def hierarchical_allreduce_time(nbytes: float, local: int, nodes: int, *, local_bandwidth: float,
                                local_latency: float, net_bandwidth: float, net_latency: float,
                                net_algorithm: str = "tree", overhead: float = 0.0) -> float:
    """α-β time of a two-level all-reduce over ``nodes`` nodes of ``local`` ranks: a ring
    reduce-scatter inside each node, an all-reduce of the S/local shard among the nodes' peers
    (``net_algorithm``, over the scale-out network; all ``local`` shards travel at once, each rank
    on its own port), then a ring all-gather inside the node. This is how collective libraries
    split a large job between the scale-up domain and the network [nvidia2026nccltuning]; a flat
    ring over every rank pays 2(n−1) network latencies instead of 2·log₂(nodes)."""
    nbytes = _checks.non_negative("nbytes", nbytes)
    local = _checks.count("local", local)
    nodes = _checks.count("nodes", nodes)
    inside = allreduce_time(nbytes, local, local_bandwidth, local_latency, "ring")  # RS then AG
    between = allreduce_time(nbytes / local, nodes, net_bandwidth, net_latency, net_algorithm)
    return _checks.non_negative("overhead", overhead) + inside + between


def algorithm_bandwidth(nbytes: float, seconds: float) -> float:
    """algbw = S / t, in bytes/s [nccltests2024performance]."""
    return _checks.non_negative("nbytes", nbytes) / _checks.positive("seconds", seconds)


def bus_bandwidth(nbytes: float, seconds: float, ranks: int) -> float:
    """busbw = algbw · 2(n−1)/n for an all-reduce [nccltests2024performance]: the per-rank link speed
    the measured time implies, comparable with the hardware's peak whatever the rank count."""
    n = _checks.count("ranks", ranks)
    return algorithm_bandwidth(nbytes, seconds) * 2 * (n - 1) / n


def gradient_bytes(params: float, bytes_per_value: float = 2.0) -> float:
    """Bytes of one full gradient: one value per parameter (2 for BF16, 4 for FP32)."""
    return _checks.positive("params", params) * _checks.positive("bytes_per_value", bytes_per_value)


@dataclass(frozen=True)
class Step:
    """One data-parallel training step: seconds of compute and of gradient all-reduce."""

    compute: float
    allreduce: float

    @property
    def efficiency(self) -> float:
        """Fraction of the step spent computing when communication does not overlap compute."""
        return self.compute / (self.compute + self.allreduce)

    def efficiency_at(self, overlap: float) -> float:
        """Fraction of the step spent computing when the all-reduce can hide behind ``overlap`` of
        the compute (0: none; 2/3: the backward pass, where data-parallel frameworks start each
        bucket's all-reduce as soon as its gradients are ready [li2020pytorch]; 1: all of it). The
        step lasts compute + max(0, all-reduce − overlap·compute)."""
        overlap = float(_checks.non_negative("overlap", overlap))
        if overlap > 1:
            raise ValueError(f"overlap must be in [0, 1], got {overlap!r}")
        return self.compute / (self.compute + max(0.0, self.allreduce - overlap * self.compute))


def pipeline_bytes_per_token(d_model: float, batch: float = 1, bytes_per_value: float = 2.0) -> float:
    """Bytes crossing one pipeline-stage boundary per decoding step: the residual-stream activation
    of each of the ``batch`` sequences, batch · d_model · bytes."""
    return (_checks.positive("d_model", d_model) * _checks.positive("batch", batch)
            * _checks.positive("bytes_per_value", bytes_per_value))


def tensor_parallel_decode_time(layers: int, d_model: float, ranks: int, bandwidth: float,
                                latency: float, *, batch: float = 1, bytes_per_value: float = 2.0,
                                algorithm: str = "ring", overhead: float = 0.0) -> float:
    """Seconds of communication per decoding step of a ``layers``-layer model with Megatron tensor
    parallelism over ``ranks`` ranks: two all-reduces per layer [shoeybi2019megatron], each of one
    activation per sequence (batch · d_model · bytes), each costing :func:`allreduce_time`."""
    layers = _checks.count("layers", layers)
    message = pipeline_bytes_per_token(d_model, batch, bytes_per_value)
    per_layer = TP_ALLREDUCES_PER_LAYER["forward"]
    return layers * per_layer * allreduce_time(message, ranks, bandwidth, latency, algorithm,
                                               overhead=overhead)


def bisection_demand(traffic: Traffic) -> float:
    """Bisection bandwidth a collective needs to run every round at the speed of its busiest link,
    in units of one link's bandwidth (per direction): the largest, over rounds, of the bytes that
    cross between the lower and upper halves of the ranks, divided by the busiest link's bytes on a
    non-blocking switch."""
    worst = 0.0
    for sent in traffic.rounds:
        busiest = link_loads(sent, "switch").max()
        if busiest > 0:
            worst = max(worst, bisection_bytes(sent) / busiest)
    return worst


def required_link_bandwidth(tokens_per_chip: float, peak_flop_s: float, utilisation: float,
                            bytes_per_value: float = 2.0) -> float:
    """Per-direction bandwidth (bytes/s) at which a data-parallel ring all-reduce of the gradient
    takes as long as the step's compute, for many chips: 2·N·b/W = 6·N·(T/d)/(P·u) gives
    W* = b·P·u / (3·T/d), whatever the model's size N (sharding the model over m chips divides both
    sides by m). ``tokens_per_chip`` is T/d, the global batch over the data-parallel degree."""
    tokens_per_chip = _checks.positive("tokens_per_chip", tokens_per_chip)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    utilisation = _checks.fraction("utilisation", utilisation)
    bytes_per_value = _checks.positive("bytes_per_value", bytes_per_value)
    flop_per_byte = market.TRAINING_FLOP_PER_PARAM / 2  # 6N FLOP a token against 2N values sent a step
    return bytes_per_value * peak_flop_s * utilisation / (flop_per_byte * tokens_per_chip)


def data_parallel_bytes_per_token(params: float, replicas: int, tokens_per_step: float,
                                  bytes_per_value: float = 2.0) -> float:
    """Bytes one data-parallel replica sends per token it processes: a ring all-reduce of the
    gradient, 2(d−1)/d · N·b a step [patarasuk2009bandwidth], over the T/d tokens of its share of
    the step. Compare with a token's pipeline message, not the gradient over all T tokens: the
    gradient is sent by every replica."""
    d = _checks.count("replicas", replicas)
    tokens = _checks.positive("tokens_per_step", tokens_per_step)
    return 2 * (d - 1) / d * gradient_bytes(params, bytes_per_value) / (tokens / d)


@dataclass(frozen=True)
class Layout:
    """A 3-D (4-D with context) parallel layout: tensor × context × pipeline × data degrees, as
    Meta reports them for Llama 3 [dubey2024llama]."""

    tp: int
    cp: int
    pp: int
    dp: int

    def __post_init__(self) -> None:
        for name in ("tp", "cp", "pp", "dp"):
            _checks.count(name, getattr(self, name))

    @property
    def gpus(self) -> int:
        return self.tp * self.cp * self.pp * self.dp


@dataclass(frozen=True)
class TierTraffic:
    """Per GPU and per training step: seconds of compute, and bytes each GPU sends for each kind of
    parallelism (tensor, pipeline, data)."""

    compute: float
    tensor: float
    pipeline: float
    data: float

    def break_even(self, kind: str) -> float:
        """Bandwidth (bytes/s per direction) at which ``kind``'s bytes take as long as the compute."""
        kind = _checks.choice("kind", kind, ("tensor", "pipeline", "data"))
        return getattr(self, kind) / self.compute

    def efficiency(self, *, tensor_bandwidth: float, pipeline_bandwidth: float, data_bandwidth: float,
                   overlap: float) -> float:
        """Fraction of the step spent computing, bandwidth terms only: the tensor-parallel
        all-reduces and the pipeline sends sit on the critical path (each waits for the layer before
        it), while the gradient's all-reduce can hide behind ``overlap`` of the compute
        (:meth:`Step.efficiency_at`)."""
        exposed = (self.tensor / _checks.positive("tensor_bandwidth", tensor_bandwidth)
                   + self.pipeline / _checks.positive("pipeline_bandwidth", pipeline_bandwidth))
        data = self.data / _checks.positive("data_bandwidth", data_bandwidth)
        step = Step(compute=self.compute, allreduce=data)
        return self.compute / (self.compute / step.efficiency_at(overlap) + exposed)


def layout_traffic(params: float, layers: int, d_model: float, tokens_per_step: float, layout: Layout, *,
                   peak_flop_s: float, utilisation: float, bytes_per_value: float = 2.0,
                   zero_stage: int = 1, microbatches: float = 1.0) -> TierTraffic:
    """What one GPU computes and sends in one step of a tensor × pipeline × data parallel layout.

    * compute: 6·N·T FLOP shared by all GPUs at ``utilisation`` of ``peak_flop_s``
      [kaplan2020scaling]. Use a compute-only utilisation: a measured MFU already contains the
      exposed communication.
    * tensor: each GPU's L/pp layers do 4 all-reduces per layer per token (2 forward, 2 backward
      [shoeybi2019megatron]) of d_model·b bytes per token over its replica's T/dp tokens, each
      sending 2(t−1)/t of the message per GPU (a ring, or the reduce-scatter + all-gather of
      sequence parallelism, the same bytes [korthikanti2022reducing]).
    * pipeline: an inner stage sends each token's activation forward and its gradient back, split
      over the t tensor ranks by sequence parallelism: 2·(T/dp)·d_model·b/t.
    * data: the GPU's 1/(t·pp) shard of the gradient, all-reduced (or reduce-scattered, then the
      weights all-gathered) over the dp replicas once a step: 2(dp−1)/dp·N·b/(t·pp) (ZeRO stages 0
      and 1, which keep a whole gradient buffer). ZeRO stage 2 shards the gradients, so it
      reduce-scatters them as they are produced, for every one of the replica's ``microbatches``
      micro-batches, and all-gathers the weights once: (microbatches + 1)·(dp−1)/dp·N·b/(t·pp).
      ZeRO stage 3 (fully sharded weights, gathered for the forward and again for the backward
      pass, gradients reduce-scattered) sends 1.5 times the all-reduce's bytes for every micro-batch,
      since with gradient accumulation the sharded weights are gathered again for each
      [rajbhandari2020zero].

    Context parallelism's key/value exchanges are not modelled (``layout.cp`` must be 1), nor are
    the forward all-reduces that activation recomputation repeats in the backward pass.
    """
    params = _checks.positive("params", params)
    layers = _checks.count("layers", layers)
    d_model = _checks.positive("d_model", d_model)
    tokens = _checks.positive("tokens_per_step", tokens_per_step)
    b = _checks.positive("bytes_per_value", bytes_per_value)
    zero_stage = _checks.choice("zero_stage", zero_stage, (0, 1, 2, 3))
    microbatches = _checks.positive("microbatches", microbatches)
    if layout.cp != 1:
        raise ValueError(f"layout.cp must be 1 (context-parallel traffic is not modelled), got {layout.cp}")
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    utilisation = _checks.fraction("utilisation", utilisation)
    t, pp, dp = layout.tp, layout.pp, layout.dp
    replica_tokens = tokens / dp
    compute = market.training_flops(params, tokens) / (layout.gpus * peak_flop_s * utilisation)
    per_layer = sum(TP_ALLREDUCES_PER_LAYER.values())
    tensor = (layers / pp) * per_layer * 2 * (t - 1) / t * replica_tokens * d_model * b
    pipeline = 0.0 if pp == 1 else 2 * replica_tokens * d_model * b / t
    shard = gradient_bytes(params, b) / (t * pp)
    passes = {0: 2.0, 1: 2.0, 2: microbatches + 1.0, 3: 3.0 * microbatches}[zero_stage]  # of (dp-1)/dp·shard
    data = (dp - 1) / dp * shard * passes
    return TierTraffic(compute=compute, tensor=tensor, pipeline=pipeline, data=data)


def expert_parallel_bytes_per_token(d_model: float, experts_per_token: int, moe_layers: int, *,
                                    dispatch_bytes: float = 1.0, combine_bytes: float = 2.0) -> float:
    """Bytes a token sends in expert-parallel serving of a mixture-of-experts model when every one
    of its routed experts sits on another chip: each MoE layer dispatches the token's activation to
    its ``experts_per_token`` experts and gathers (combines) their outputs back, an all-to-all
    exchange. DeepSeek-V3 dispatches in FP8 (1 byte a value) and combines in BF16 (2 bytes)
    [deepseekai2024deepseekv3]. An upper bound: experts on the token's own chip send nothing."""
    d_model = _checks.positive("d_model", d_model)
    k = _checks.count("experts_per_token", experts_per_token)
    layers = _checks.count("moe_layers", moe_layers)
    per_value = _checks.positive("dispatch_bytes", dispatch_bytes) + _checks.positive("combine_bytes",
                                                                                       combine_bytes)
    return layers * k * d_model * per_value
