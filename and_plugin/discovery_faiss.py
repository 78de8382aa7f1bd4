"""Approximate neighbourhood discovery with faiss (``method.discovery="faiss"``).

Exact discovery (:func:`and_plugin.curriculum.entropy_and_neighbours`) compares every pair of
bank rows: O(N² d), hours at N = 4M. This module gives the same two outputs from an inverted-file
index on inner product:

- **Neighbours (Eq 1).** The top-K' candidates of each row (K' = ``candidates`` > k) come from a
  faiss ``IndexIVFFlat`` (``METRIC_INNER_PRODUCT``; ``index="hnsw"`` for ``IndexHNSWFlat``,
  ``index="flat"`` for the exact ``IndexFlatIP``); N_k(i) is the first k of them, self excluded.
- **Entropy (Eq 5).** With logits l_ij = x̃_i·x̃_j / τ, Z_i = Σ_j e^{l_ij} and
  W_i = Σ_j e^{l_ij} l_ij, H_i = log Z_i − W_i / Z_i over all N columns, self term included. The
  head is summed exactly: with IVF, every column in the ``nprobe`` lists the row probes (the
  neighbourhood the index scans anyway); with HNSW / flat, the K' candidates and the row itself.
  The other columns (the tail) are estimated from one sample of columns shared by every row
  (drawn from ``seed``): with IVF, m_c = clamp(round(m·n_c/N), 1, n_c) rows of each list c
  (m = ``tail_samples``), weighted n_c / m_c, a row's tail being the lists it does not probe
  (sampling list by list removes the variation between lists from the estimate); with HNSW /
  flat, m uniform columns, those outside row i's head scaled by (N − h_i) / m_i.

Error bound (docs/components/faiss-discovery.md). Shift the logits of row i by its largest head
logit c_i, u_ij = l_ij − c_i ≤ 0, so H_i = log Z + V / Z with Z = Σ_j e^{u_ij} and
V = Σ_j −u_ij e^{u_ij} ≥ 0. When the head holds the true top K' columns, every tail column has
u ≤ u_(K') (the smallest candidate logit), so its terms lie in e^u ∈ [0, b_Z], b_Z = e^{u_(K')},
and −u e^u ∈ [0, b_V], b_V = −u_(K') e^{u_(K')} if u_(K') ≤ −1 else 1/e. Hoeffding's inequality
for the sum of the independent strata (it holds for sampling without replacement too; each
summand of stratum c spans b·n_c/m_c) gives, with probability ≥ 1 − δ for row i::

    |Ẑ_tail − Z_tail| ≤ ε_Z = b_Z · sqrt(ln(4/δ)/2 · Σ_c n_c² / m_c)
    |V̂_tail − V_tail| ≤ ε_V = b_V · sqrt(ln(4/δ)/2 · Σ_c n_c² / m_c)

over the row's unprobed strata (a stratum sampled in full adds 0; one uniform sample is one
stratum, n = N − h_i, m = m_i: ε_Z = (N − h_i) b_Z sqrt(ln(4/δ) / (2 m_i))). As log Z rises with
Z and V / Z rises with V and falls with Z, H_i lies in [log Z_lo + V_lo / Z_hi,
log Z_hi + V_hi / Z_lo] with Z_lo = max(Ẑ − ε_Z, Z_head) etc.
:meth:`FaissDiscovery.entropy_bound` returns the half-width of that interval around Ĥ_i. The
bound is a worst case (it lets every tail term be as large as the smallest candidate's); the
measured errors are far smaller (benchmarks/results/scale/).

Deterministic: the same bank, arguments, seed and thread count give the same result (k-means
training and the tail sample are seeded; ``index="hnsw"`` builds its graph in parallel and is
deterministic only with ``threads=1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ._validation import check_choice, check_int_at_least, check_positive, check_shape

INDEXES = ("ivf", "hnsw", "flat")
DISCOVERY_KWARGS = ("candidates", "tail_samples", "seed", "index", "nlist", "nprobe", "hnsw_m", "ef_search",
                    "ef_construction", "threads", "block_rows")
MISSING_FAISS = "method.discovery='faiss' needs faiss: pip install 'and_plugin[faiss]' (or faiss-gpu)"


def import_faiss() -> ModuleType:
    """The faiss module, or an ImportError with the one-line install hint."""
    try:
        import faiss
    except ImportError:
        raise ImportError(MISSING_FAISS) from None
    return faiss


@dataclass
class FaissDiscovery:
    """Entropy and neighbours of the query rows, with what the error bound needs.

    Attributes:
        entropy: Shape (Q,), float32: Ĥ_i, the head exact and the tail sampled.
        neighbours: Shape (Q, k), long: the top-k candidates of each row, self excluded, indices
            into the bank.
        z_head, v_head: Shape (Q,), float64: the exact head sums of e^u and −u e^u.
        z_tail, v_tail: Shape (Q,), float64: the scaled tail estimates.
        z_range, v_range: Shape (Q,), float64: b_Z and b_V, the ranges of one tail term.
        tail_size: Shape (Q,), long: N − h_i, the columns outside row i's head.
        spread: Shape (Q,), float64: Σ_c n_c² / m_c over the sampled strata of row i's tail (one
            stratum of n = N − h_i columns and m = m_i samples without IVF lists; 0 for a stratum
            summed in full), the Hoeffding width factor.
    """

    entropy: Tensor
    neighbours: Tensor
    z_head: Tensor
    v_head: Tensor
    z_tail: Tensor
    v_tail: Tensor
    z_range: Tensor
    v_range: Tensor
    tail_size: Tensor
    spread: Tensor

    def entropy_bound(self, delta: float = 1e-3) -> Tensor:
        """Half-width of the Hoeffding interval of H_i around Ĥ_i, per row, shape (Q,), float64.

        Holds for each row with probability ≥ 1 − δ when the row's head is its true top K'
        (always for ``index="flat"``; otherwise up to the index's recall). 0 where the tail was
        summed in full (m ≥ N).
        """
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        width = torch.sqrt(self.spread * math.log(4.0 / delta) / 2.0)
        eps_z = self.z_range * width
        eps_v = self.v_range * width
        z_hat, v_hat = self.z_head + self.z_tail, self.v_head + self.v_tail
        z_lo = torch.maximum(z_hat - eps_z, self.z_head)
        z_hi = z_hat + eps_z
        v_lo = torch.maximum(v_hat - eps_v, self.v_head)
        v_hi = v_hat + eps_v
        estimate = torch.log(z_hat) + v_hat / z_hat
        low = torch.log(z_lo) + v_lo / z_hi
        high = torch.log(z_hi) + v_hi / z_lo
        return torch.maximum(estimate - low, high - estimate)


def faiss_entropy_and_neighbours(
    bank: Tensor,
    temperature: float,
    neighbours: int = 1,
    queries: Tensor | None = None,
    row_offset: int = 0,
    **discovery_kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Entropy (Eq 5) and top-k neighbours (Eq 1) of every bank row, approximately, with faiss.

    The meaning of :func:`and_plugin.curriculum.entropy_and_neighbours`: the softmax over the
    whole bank with the self term included in the entropy, the row itself excluded from its
    neighbours. Approximations and their bound: :mod:`and_plugin.discovery_faiss`.

    Args:
        bank: Unit vectors, shape (N, d), any float dtype (searched in float32).
        temperature: τ of the softmax.
        neighbours: k, 1 ≤ k < N.
        queries: Rows ``row_offset .. row_offset + Q`` of the bank, shape (Q, d), when one rank
            discovers only its own rows (results do not depend on how the rows are split);
            None for all N rows.
        row_offset: Bank index of the first query row (self exclusion is by index).
        **discovery_kwargs: ``method.discovery_kwargs``: candidates (K' > k, default 64),
            tail_samples (m, default 2048), seed (0), index ("ivf", "hnsw" or "flat"), nlist
            (IVF lists, default ≈ 4·sqrt(N)), nprobe (lists searched, default 32), hnsw_m (32),
            ef_search (128), ef_construction (80), threads (faiss OpenMP threads, default
            ``torch.get_num_threads()``), block_rows (query rows per block, 16384).

    Returns:
        ``(entropy, neighbours)``: shapes (Q,) float32 and (Q, k) long, on the bank's device.

    Raises:
        ImportError: If faiss is not installed.
        ValueError: On a bad argument or an unknown key of ``discovery_kwargs``.
    """
    found = faiss_discovery(bank, temperature, neighbours, queries, row_offset, **discovery_kwargs)
    return found.entropy, found.neighbours


@torch.no_grad()
def faiss_discovery(
    bank: Tensor,
    temperature: float,
    neighbours: int = 1,
    queries: Tensor | None = None,
    row_offset: int = 0,
    **discovery_kwargs: Any,
) -> FaissDiscovery:
    """:func:`faiss_entropy_and_neighbours` with the terms of the error bound (same arguments)."""
    check_shape("bank", bank, (None, None))
    check_positive("temperature", temperature)
    size, dim = bank.shape
    check_int_at_least("neighbours", neighbours, 1)
    if neighbours >= size:
        raise ValueError(f"neighbours must be < the number of samples N = {size}, got {neighbours}")
    options = _options(size, neighbours, discovery_kwargs)
    if queries is None:
        if row_offset != 0:
            raise ValueError(f"row_offset must be 0 when queries is None, got {row_offset!r}")
        queries = bank
    check_shape("queries", queries, (None, dim))
    if isinstance(row_offset, bool) or not isinstance(row_offset, int) or not 0 <= row_offset <= size - len(queries):
        raise ValueError(f"row_offset must be an integer in [0, N - Q] = [0, {size - len(queries)}], got {row_offset!r}")
    faiss = import_faiss()

    keys = bank.detach().to(device="cpu", dtype=torch.float32).contiguous()
    queries = queries.detach().to(device="cpu", dtype=torch.float32).contiguous()
    previous_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(options["threads"])
    try:
        index, quantizer = _build_index(faiss, keys, options, bank.is_cuda)
        generator = torch.Generator().manual_seed(options["seed"])
        # One sample of columns for every row, so a row's result does not depend on the split.
        permutation = torch.randperm(size, generator=generator)
        lists = _inverted_lists(quantizer, keys, queries, options) if quantizer is not None else None
        if lists is None:
            sample = permutation[: options["tail_samples"]].sort().values
        else:
            sample = _stratified_sample(lists, permutation, options["tail_samples"])
        parts = []
        for start in range(0, len(queries), options["block_rows"]):
            block = queries[start : start + options["block_rows"]]
            probes = None if lists is None else lists["probes"][start : start + len(block)]
            parts.append(_discover_block(index, keys, block, row_offset + start, sample, temperature, neighbours,
                                         options["candidates"], probes, lists))
        if lists is not None:
            _add_probed_lists(keys, queries, lists, parts, options["block_rows"], temperature)
    finally:
        faiss.omp_set_num_threads(previous_threads)
    for part in parts:
        _finish(part)
    fields = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    fields["entropy"] = fields["entropy"].to(bank.device)
    fields["neighbours"] = fields["neighbours"].to(bank.device)
    return FaissDiscovery(**fields)


def _options(size: int, neighbours: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``discovery_kwargs`` checked, with the defaults filled in."""
    unknown = sorted(set(kwargs) - set(DISCOVERY_KWARGS))
    if unknown:
        raise ValueError(f"discovery_kwargs keys must be among {list(DISCOVERY_KWARGS)}, got {unknown[0]!r}")
    options: dict[str, Any] = {
        "candidates": 64, "tail_samples": 2048, "seed": 0, "index": "ivf", "nlist": None, "nprobe": 16,
        "hnsw_m": 32, "ef_search": 128, "ef_construction": 80, "threads": torch.get_num_threads(),
        "block_rows": 16384,
    }
    options.update(kwargs)
    check_choice("index", options["index"], INDEXES)
    if isinstance(options["candidates"], bool) or not isinstance(options["candidates"], int) \
            or options["candidates"] <= neighbours:
        raise ValueError(f"candidates must be an integer > neighbours = {neighbours}, got {options['candidates']!r}")
    options["candidates"] = min(options["candidates"], size)
    for name in ("tail_samples", "nprobe", "hnsw_m", "ef_search", "ef_construction", "threads", "block_rows"):
        check_int_at_least(name, options[name], 1)
    check_int_at_least("seed", options["seed"], 0)
    if options["nlist"] is None:
        # ≈ 4·sqrt(N) lists, with the 39 training points per list faiss's k-means asks for.
        options["nlist"] = max(1, min(int(4 * math.sqrt(size)), size // 39))
    check_int_at_least("nlist", options["nlist"], 1)
    if options["nlist"] > size:
        raise ValueError(f"nlist must be <= the number of samples N = {size}, got {options['nlist']!r}")
    return options


def _build_index(faiss: ModuleType, keys: Tensor, options: dict[str, Any], on_cuda: bool) -> tuple[Any, Any]:
    """The inner-product index over the bank rows (on the GPU with faiss-gpu and a CUDA bank), and
    its coarse quantizer (IVF; None otherwise), trained on the CPU."""
    dim = keys.shape[1]
    data = keys.numpy()
    if options["index"] == "flat":
        index = faiss.IndexFlatIP(dim)
    elif options["index"] == "hnsw":
        index = faiss.IndexHNSWFlat(dim, options["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = options["ef_construction"]
        index.hnsw.efSearch = max(options["ef_search"], options["candidates"])
    else:
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, options["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = options["seed"]
        index.cp.max_points_per_centroid = 64  # k-means on ≤ 64·nlist rows: ample for 4·sqrt(N) lists
        index.nprobe = min(options["nprobe"], options["nlist"])
    if not index.is_trained:
        index.train(data)
    index.add(data)
    quantizer = faiss.downcast_index(index.quantizer) if options["index"] == "ivf" else None
    if on_cuda and options["index"] != "hnsw" and hasattr(faiss, "StandardGpuResources"):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), torch.cuda.current_device(), index)
    return index, quantizer


def _inverted_lists(quantizer: Any, keys: Tensor, queries: Tensor, options: dict[str, Any]) -> dict:
    """The IVF list of every bank row, the bank rows grouped by list, and each query's probed lists."""
    nprobe = min(options["nprobe"], options["nlist"])
    list_of = torch.from_numpy(quantizer.search(keys.numpy(), 1)[1][:, 0].copy())  # (N,)
    probes = torch.from_numpy(quantizer.search(queries.numpy(), nprobe)[1].copy())  # (Q, P)
    order = torch.sort(list_of, stable=True).indices
    sizes = torch.bincount(list_of, minlength=options["nlist"])
    return {"list_of": list_of, "probes": probes, "order": order, "sizes": sizes, "nlist": options["nlist"]}


def _discover_block(
    index: Any,
    keys: Tensor,
    block: Tensor,
    first_row: int,
    sample: Tensor,
    temperature: float,
    neighbours: int,
    candidates: int,
    probes: Tensor | None,
    lists: dict | None,
) -> dict[str, Tensor]:
    """Neighbours, the logit shift, the bound terms and the sampled tail of rows ``first_row .. + B``.

    The head is the candidates and the row itself, or, for an IVF index (``probes`` given), every
    bank row in the lists the row probes (their exact sums are added by :func:`_add_probed_lists`).
    """
    rows = block.shape[0]
    size = keys.shape[0]
    similarity, found = index.search(block.numpy(), candidates)  # (B, K') each, descending
    similarity, found = torch.from_numpy(similarity), torch.from_numpy(found)
    valid = found >= 0
    own = torch.arange(first_row, first_row + rows).view(-1, 1)
    is_self = found == own

    # Neighbours: the best k candidates other than the row itself.
    ranked = similarity.masked_fill(~valid | is_self, float("-inf"))
    top = ranked.topk(neighbours, dim=1)
    nearest = found.gather(1, top.indices)
    missing = torch.isinf(top.values)
    if missing.any():  # the index returned fewer than k others (tiny lists): fill by exact search
        nearest = _fill_exact(keys, block, nearest, missing, own, neighbours)

    self_logit = (block * keys[first_row : first_row + rows]).sum(dim=1).double() / temperature
    logits = (similarity.double() / temperature).masked_fill(~valid, float("-inf"))
    shift = torch.maximum(logits.max(dim=1).values, self_logit).view(-1, 1)
    smallest = (logits - shift).masked_fill(~valid, float("inf")).min(dim=1).values  # u_(K')
    self_u = self_logit - shift[:, 0]

    if probes is None:  # head: the candidates, plus the row itself where the index missed it
        self_out = ~is_self.any(dim=1)
        head_e = (logits - shift).exp()  # 0 for absent candidates
        head_u = torch.where(valid, logits - shift, 0.0)
        z_head = head_e.sum(dim=1) + torch.where(self_out, self_u.exp(), 0.0)
        v_head = (-head_u * head_e).sum(dim=1) + torch.where(self_out, -self_u * self_u.exp(), 0.0)
        head_size = valid.sum(dim=1) + self_out.long()
        in_head = _sampled_in_head(sample, torch.cat([torch.where(valid, found, -1), own], dim=1))
        # Tail: the sampled columns outside the row's head, scaled to the N − h_i columns there.
        sampled = sample.numel() - in_head.sum(dim=1)
        tail_size = size - head_size
        row_weight = torch.where(sampled > 0, tail_size.double() / sampled.clamp(min=1).double(), 0.0)
        column_weight = torch.ones(sample.numel())
        spread = torch.where(sampled >= tail_size, 0.0, tail_size.double() ** 2 / sampled.clamp(min=1).double())
    else:  # head: the probed lists (summed later); tail: the other lists, each by its own sample
        z_head = torch.zeros(rows, dtype=torch.float64)
        v_head = torch.zeros(rows, dtype=torch.float64)
        tail_size = size - lists["sizes"][probes].sum(dim=1)
        probed = torch.zeros(rows, lists["nlist"], dtype=torch.bool)
        probed[torch.arange(rows).view(-1, 1), probes] = True
        in_head = probed[:, lists["list_of"][sample]]
        row_weight = torch.ones(rows, dtype=torch.float64)
        column_weight = lists["weight"].float()  # n_c / m_c of each sampled column's list
        spread = lists["spread"].sum() - lists["spread"][probes].sum(dim=1)

    tail_u = (block @ keys[sample].T - (shift * temperature).float()) / temperature  # (B, m), float32
    tail_e = tail_u.exp().masked_fill_(in_head, 0.0)
    return {
        "neighbours": nearest.long(),
        "z_head": z_head, "v_head": v_head,
        # Row sums, not a matrix-vector product: a row's sum must not depend on the block's height.
        "z_tail": (tail_e * column_weight).sum(dim=1).double() * row_weight,
        "v_tail": (tail_u.mul_(tail_e).mul_(column_weight)).sum(dim=1).double().neg_() * row_weight,
        "z_range": smallest.exp(),
        "v_range": torch.where(smallest <= -1.0, -smallest * smallest.exp(), math.exp(-1.0)),
        "tail_size": tail_size, "spread": spread, "shift": shift[:, 0],
    }


def _stratified_sample(lists: dict, permutation: Tensor, samples: int) -> Tensor:
    """Columns sampled list by list: m_c = clamp(round(m·n_c/N), 1, n_c) from list c, sorted.

    Sets ``lists["weight"]`` (n_c / m_c per sampled column) and ``lists["spread"]`` (n_c² / m_c
    per list, 0 for a list sampled in full: the Hoeffding width of each list's estimate).
    """
    size = permutation.numel()
    sizes = lists["sizes"]
    quota = torch.clamp(torch.round(samples * sizes.double() / size).long(), min=1)
    quota = torch.minimum(quota, sizes)
    rank = torch.empty_like(permutation)
    rank[permutation] = torch.arange(size)
    order = torch.sort(lists["list_of"] * size + rank).indices  # by list, then by the seeded permutation
    first = torch.cumsum(sizes, 0) - sizes
    position = torch.arange(size) - first[lists["list_of"][order]]
    sample = order[position < quota[lists["list_of"][order]]].sort().values
    column_list = lists["list_of"][sample]
    lists["weight"] = sizes[column_list].double() / quota[column_list].double()
    lists["spread"] = torch.where(quota < sizes, sizes.double() ** 2 / quota.double().clamp(min=1), 0.0)
    return sample


def _add_probed_lists(keys: Tensor, queries: Tensor, lists: dict, parts: list[dict], block_rows: int,
                      temperature: float) -> None:
    """Adds the exact sums of e^u and −u e^u over every query's probed lists to its head sums.

    One pass over the lists: each list's bank rows against all the queries that probe it.
    """
    shift = torch.cat([part["shift"] for part in parts])
    z = torch.zeros(len(queries), dtype=torch.float64)
    v = torch.zeros(len(queries), dtype=torch.float64)
    probes = lists["probes"]
    pairs = torch.sort(probes.reshape(-1), stable=True)
    query_of = pairs.indices // probes.shape[1]  # (Q·P,), grouped by list
    bounds = torch.cumsum(torch.bincount(probes.reshape(-1), minlength=lists["nlist"]), 0).tolist()
    members = torch.cumsum(lists["sizes"], 0).tolist()
    grouped = keys[lists["order"]]  # bank rows grouped by list: each list a contiguous slice
    first_query, first_member = 0, 0
    for last_query, last_member in zip(bounds, members):
        if last_query > first_query and last_member > first_member:
            rows = query_of[first_query:last_query]
            u = queries[rows] @ grouped[first_member:last_member].T
            u.sub_((shift[rows] * temperature).float().view(-1, 1)).div_(temperature)
            e = u.exp()
            z.index_add_(0, rows, e.sum(dim=1).double())  # float32 sums of at most n_c terms
            v.index_add_(0, rows, (u.mul_(e)).sum(dim=1).double().neg_())
        first_query, first_member = last_query, last_member
    for start, part in zip(range(0, len(queries), block_rows), parts):
        part["z_head"] = part["z_head"] + z[start : start + len(part["shift"])]
        part["v_head"] = part["v_head"] + v[start : start + len(part["shift"])]


def _finish(part: dict[str, Tensor]) -> None:
    """Ĥ = log Ẑ + V̂ / Ẑ of a block, in place."""
    z = part["z_head"] + part["z_tail"]
    v = part["v_head"] + part["v_tail"]
    part["entropy"] = (torch.log(z) + v / z).float()
    del part["shift"]


def _sampled_in_head(sample: Tensor, head: Tensor) -> Tensor:
    """(B, m) bool: sampled column c is one of the row's ``head`` indices (B, h), −1 = none.

    ``sample`` is sorted, so each head index finds its sampled position by binary search
    instead of a (B, h, m) comparison.
    """
    position = torch.searchsorted(sample, head).clamp(max=sample.numel() - 1)
    hit = (sample[position] == head) & (head >= 0)
    mask = torch.zeros(head.shape[0], sample.numel(), dtype=torch.bool)
    row = torch.arange(head.shape[0]).view(-1, 1).expand_as(head)
    mask[row[hit], position[hit]] = True
    return mask


def _fill_exact(keys: Tensor, block: Tensor, nearest: Tensor, missing: Tensor, own: Tensor, k: int) -> Tensor:
    """Rows whose candidate list held fewer than k others get their k neighbours by exact search."""
    rows = missing.any(dim=1).nonzero().flatten()
    similarity = block[rows] @ keys.T
    similarity[torch.arange(len(rows)), own[rows, 0]] = float("-inf")
    nearest = nearest.clone()
    nearest[rows] = similarity.topk(k, dim=1).indices
    return nearest


__all__ = ["MISSING_FAISS", "FaissDiscovery", "faiss_discovery", "faiss_entropy_and_neighbours", "import_faiss"]
