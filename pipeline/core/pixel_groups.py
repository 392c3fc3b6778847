"""Symmetry groups acting on an n x n pixel grid, and orthogonal projections onto E.

Every group here acts on images by permuting pixels (channels untouched). A group is therefore fully
described by one table: ``sources[k, p]``, the pixel that the k-th element moves *into* pixel ``p``
(``transform(x, k).flatten()[p] == x.flatten()[sources[k, p]]``). Everything else is derived from it:

* equivariant-type layers ``A`` of shape (..., N, N), N = n*n, with the output pixel first: E is the set
  of ``A`` with ``P_g A P_g^T = A``. The orthogonal projection is the group average
  ``(1/|G|) sum_g A[src_g(i), src_g(j)]``; its value is constant on each orbit of pixel *pairs*, so it
  suffices to compute it once per orbit and gather it back. For the translation groups an orbit of
  pairs is a (wrapped) diagonal of the pixel-pair matrix, so this is the "diagonal sums" evaluation;
  no N^2 x N^2 operator is ever formed, only index tables of size about N^2.
* invariant-type weights ``w`` of shape (..., N): E is the set of ``w`` with ``w P_g = w`` and the
  projection averages over pixel orbits in the same way.

The gathers are deterministic on CPU and CUDA (no atomics), so projections reproduce bitwise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OrbitTable:
    """Orbits of a permutation action, as index tables.

    ``members[o, k]`` is the k-th group element's image of orbit o's representative (repetitions are
    kept, so a plain mean over k is the exact group average even where stabilisers are non-trivial);
    ``orbit_of[p]`` is the orbit of point p.
    """

    members: torch.Tensor  # (num_orbits, |G|) int64
    orbit_of: torch.Tensor  # (num_points,) int64


def _orbit_table(images_of_points: torch.Tensor) -> OrbitTable:
    """``images_of_points[k, p]`` is where element k sends point p (a permutation for each k)."""
    # The canonical label of a point is the smallest point of its orbit: one pass over the elements.
    canonical = images_of_points.min(dim=0).values
    representatives, orbit_of = torch.unique(canonical, sorted=True, return_inverse=True)
    members = images_of_points[:, representatives].T.contiguous()
    return OrbitTable(members=members, orbit_of=orbit_of)


class PixelGroup:
    """A finite group acting on an n x n grid by pixel permutations."""

    name: str = ""

    def __init__(self, n: int):
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"grid size n must be an integer >= 2, got {n!r}")
        self.n = n
        self.num_pixels = n * n
        self._device_tables: dict = {}
        grid = torch.arange(self.num_pixels).reshape(n, n)
        self.sources = torch.stack([self._apply(grid, k).reshape(-1) for k in range(len(self))])
        self._pixel_orbits = _orbit_table(self.sources)

    @functools.cached_property
    def _pair_orbits(self) -> OrbitTable:
        # Built on first use: a group that only moves images (e.g. the CNN's inputs) never needs it.
        return _orbit_table(
            (self.sources[:, :, None] * self.num_pixels + self.sources[:, None, :]).reshape(len(self), -1)
        )

    # -- the group -----------------------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, order={len(self)})"

    def _apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Apply element k to the last two axes of x (the n x n grid)."""
        raise NotImplementedError

    def transform(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The k-th group element applied to images or feature maps of shape (..., n, n)."""
        self._check_element(k)
        self._check_grid(x, "x", trailing=2)
        return self._apply(x, k)

    def transform_each(self, x: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
        """Apply ``elements[b]`` to ``x[b]`` for a batch x of shape (B, ..., n, n), in one gather."""
        self._check_grid(x, "x", trailing=2)
        flat = x.reshape(x.shape[0], -1, self.num_pixels)
        index = self.sources.to(x.device)[elements.to(x.device)]  # (B, N)
        moved = torch.gather(flat, 2, index[:, None, :].expand_as(flat))
        return moved.reshape(x.shape)

    def orbit_indicators(self) -> torch.Tensor:
        """(orbits, n, n) float64: the indicator map of every pixel orbit, orbits ordered by their
        smallest pixel index (a basis of the invariant maps, orthogonal but not normalised)."""
        one_hot = torch.nn.functional.one_hot(self._pixel_orbits.orbit_of, len(self._pixel_orbits.members))
        return one_hot.T.to(torch.float64).reshape(-1, self.n, self.n)

    # -- projections onto E --------------------------------------------------------------------
    def project(self, A: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection of equivariant-type layers (..., N, N) onto E (output pixel first)."""
        self._check_grid(A, "A", trailing=2, flat=True)
        flat = self._pixels_first(A, 2)
        means = self._orbit_means(flat, self._pair_orbits)
        return self._pixels_last(means.index_select(0, self._pair_orbits.orbit_of.to(A.device)), A, 2)

    def project_invariant(self, w: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection of invariant-type weights (..., N) onto maps constant on orbits."""
        self._check_grid(w, "w", trailing=1, flat=True)
        flat = self._pixels_first(w, 1)
        means = self._orbit_means(flat, self._pixel_orbits)
        return self._pixels_last(means.index_select(0, self._pixel_orbits.orbit_of.to(w.device)), w, 1)

    def dist(self, A: torch.Tensor) -> torch.Tensor:
        """dist_E of an equivariant-type layer: the Frobenius norm of its component orthogonal to E."""
        self._check_grid(A, "A", trailing=2, flat=True)
        return self._deviation_norm(self._pixels_first(A, 2), self._pair_orbits)

    def dist_invariant(self, w: torch.Tensor) -> torch.Tensor:
        self._check_grid(w, "w", trailing=1, flat=True)
        return self._deviation_norm(self._pixels_first(w, 1), self._pixel_orbits)

    # Pixel (pair) indices first and every leading axis flattened into columns: the orbit sums then add
    # whole contiguous rows, and one copy serves any layout of the input (e.g. a transposed weight view).
    @staticmethod
    def _pixels_first(values: torch.Tensor, trailing: int) -> torch.Tensor:
        axes = tuple(range(values.dim() - trailing, values.dim()))
        return values.movedim(axes, tuple(range(trailing))).reshape(math.prod(values.shape[-trailing:]), -1)

    @staticmethod
    def _pixels_last(flat: torch.Tensor, like: torch.Tensor, trailing: int) -> torch.Tensor:
        shape = (*like.shape[-trailing:], *like.shape[:-trailing])
        return flat.reshape(shape).movedim(tuple(range(trailing)), tuple(range(like.dim() - trailing, like.dim())))

    def _orbit_means(self, flat: torch.Tensor, orbits: OrbitTable, gather: bool | None = None) -> torch.Tensor:
        """(points, M) -> (orbits, M): the mean of every column over every orbit (the group average).

        Two evaluations: a gather of each orbit's |G| images (deterministic without atomics; used on the
        GPU) or one scatter-add pass over contiguous rows (cheaper on a CPU); ``gather`` forces one."""
        members, orbit_of, inverse_sizes = self._tables(orbits, flat.device, flat.dtype)
        if flat.is_cuda if gather is None else gather:
            return flat[members].mean(dim=1)
        sums = torch.zeros(len(members), flat.shape[1], dtype=flat.dtype).index_add_(0, orbit_of, flat)
        return sums.mul_(inverse_sizes[:, None])

    def _deviation_norm(self, flat: torch.Tensor, orbits: OrbitTable) -> torch.Tensor:
        orbit_of = orbits.orbit_of.to(flat.device)
        residual = flat - self._orbit_means(flat, orbits).index_select(0, orbit_of)
        # One step of refinement: a sequential float32 orbit sum of up to |G| = 784 terms carries an error
        # of many ulps, which would read as distance from E; the residual's own orbit mean removes it, so
        # a point of E measures at the round-off of its entries, not of the summation.
        residual -= self._orbit_means(residual, orbits).index_select(0, orbit_of)
        return torch.linalg.vector_norm(residual)

    def _tables(self, orbits: OrbitTable, device: torch.device,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (id(orbits), device, dtype)
        if key not in self._device_tables:
            sizes = torch.bincount(orbits.orbit_of, minlength=len(orbits.members))
            self._device_tables[key] = (orbits.members.to(device), orbits.orbit_of.to(device),
                                        (1.0 / sizes.to(torch.float64)).to(device=device, dtype=dtype))
        return self._device_tables[key]

    # -- checks --------------------------------------------------------------------------------
    def _check_element(self, k: int) -> None:
        if not 0 <= int(k) < len(self):
            raise ValueError(f"group element index {k} out of range for {self.name} (0..{len(self) - 1})")

    def _check_grid(self, x: torch.Tensor, what: str, trailing: int, flat: bool = False) -> None:
        size = self.num_pixels if flat else self.n
        if x.dim() < trailing or any(s != size for s in x.shape[-trailing:]):
            raise ValueError(
                f"{what} must end in {trailing} axes of size {size} for {self!r}, got shape {tuple(x.shape)}"
            )


class Rotations(PixelGroup):
    """C4: rotations by multiples of 90 degrees about the centre of the grid."""

    name = "rot"

    def __len__(self) -> int:
        return 4

    def _apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.rot90(x, int(k), dims=(-2, -1))


class Translations(PixelGroup):
    """Cyclic translations of the torus Z_n x Z_n; element k = (row shift, column shift)."""

    name = "trans"

    def __len__(self) -> int:
        return self.n * self.n

    def _apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.roll(x, shifts=(int(k) // self.n, int(k) % self.n), dims=(-2, -1))


class ColumnTranslations(PixelGroup):
    """Cyclic translations along x (columns) only."""

    name = "trans1d"

    def __len__(self) -> int:
        return self.n

    def _apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.roll(x, shifts=int(k), dims=-1)


class RotoTranslations(PixelGroup):
    """The group generated by C4 and the torus translations; element k = rotation(k // n^2) after
    translation(k % n^2). Rotations normalise the translations, so this set is the whole group."""

    name = "rototrans"

    def __init__(self, n: int):
        self._translations = Translations(n)
        super().__init__(n)

    def __len__(self) -> int:
        return 4 * self.n * self.n

    def _apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        rotation, translation = divmod(int(k), self.n * self.n)
        return torch.rot90(self._translations._apply(x, translation), rotation, dims=(-2, -1))


_GROUPS = {cls.name: cls for cls in (Rotations, Translations, ColumnTranslations, RotoTranslations)}


@functools.lru_cache(maxsize=32)
def get_group(name: str, n: int) -> PixelGroup:
    """The group ``name`` (one of rot, trans, trans1d, rototrans) acting on an n x n grid."""
    if name not in _GROUPS:
        raise ValueError(f"unknown group {name!r}; accepted: {', '.join(_GROUPS)}")
    return _GROUPS[name](n)
