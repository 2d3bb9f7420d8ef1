"""A small MLS-MPM simulator (2D and 3D, CPU) for particle-dynamics training data.

Method: the moving least squares material point method of Hu et al. 2018 ("A moving least squares material
point method with displacement discontinuity and two-way rigid body coupling"), in the compact form of the
88-line ``mpm88`` / ``mpm99`` reference programs, generalised to any of four materials and to 2D and 3D.
Each substep of length ``dt``:

1. P2G: every particle updates its deformation gradient ``F <- (I + dt C) F`` (``C`` its APIC affine velocity
   matrix), applies its plastic return mapping, computes its Kirchhoff stress ``tau`` and scatters mass and
   momentum ``w (m v + (m C - dt V 4 / dx^2 tau) (x_i - x_p))`` to the 3^D grid nodes of its quadratic
   B-spline stencil.
2. Grid: node velocity = momentum / mass + ``dt g``; wall nodes (see below) get the wall condition.
3. G2P: particles gather the new velocity ``v = sum w v_i`` and ``C = 4 / dx^2 sum w v_i (x_i - x_p)^T``,
   then move ``x <- x + dt v``.

Materials (:data:`MATERIALS`, parameters in :class:`Material`; Lame parameters from Young's modulus E and
Poisson ratio nu):

- ``elastic``: fixed-corotated hyperelasticity (Stomakhin et al. 2012):
  ``tau = 2 mu (F - R) F^T + lambda J (J - 1) I``, ``F = R S`` by SVD.
- ``fluid``: weakly compressible Newtonian fluid. Only ``J = det F`` is kept (``F`` is reset to
  ``J^(1/D) I`` every substep, as mpm99 does), pressure ``p = -K (J - 1)`` with a bulk modulus K far below
  water's so that the sound speed ``sqrt(K / rho)`` is only several times the flow speeds (the usual weakly
  compressible choice: density varies by a few per cent, and the time step stays large), plus a small viscous
  stress ``J eta (C + C^T)`` (``C`` approximates the velocity gradient; eta in Pa s).
- ``sand``: Drucker-Prager elastoplasticity of Klar et al. 2016 ("Drucker-Prager elastoplasticity for sand
  animation"): StVK elasticity in Hencky (log) strain, ``tau = U (2 mu eps + lambda tr(eps) 1) U^T`` with
  ``eps = log(Sigma)``, ``F = U Sigma V^T``; the return mapping projects ``eps`` onto the cone
  ``||dev eps|| + (D lambda + 2 mu) / (2 mu) tr(eps) alpha <= 0``, ``alpha = sqrt(2/3) 2 sin(phi) / (3 - sin(phi))``
  (phi the friction angle), and to the cone's tip (``Sigma = I``) under expansion (``tr eps > 0``): no cohesion.
- ``plasticine``: von Mises (J2) plasticity on the same Hencky-strain StVK model: the deviatoric Kirchhoff
  stress is limited to ``||dev tau||_F = 2 mu ||dev eps|| <= yield_stress`` by scaling ``dev eps`` back
  (volume preserving), as in the plasticine of PAC-NeRF / PhysGaussian.

Domain and walls: particles live in the box ``[0, 1]^D`` metres (the bounds); the grid has ``n_grid`` cells of
``dx = 1 / n_grid`` across it plus ``BOUNDARY_CELLS`` cells of padding beyond each wall, so every stencil stays on
the grid. Grid nodes on or beyond a wall are wall nodes: ``slip`` walls zero the velocity component into the wall
(free slip, separation allowed, mpm88's condition), ``sticky`` walls zero the whole node velocity. Positions are
clamped into the box after each substep as a safety net (the wall nodes already stop the material about half a
cell from the wall). Gravity ``g = 9.81 m/s^2`` points along ``-axis D - 1`` (y up in 2D, z up in 3D). Units: SI
(metres, seconds, kilograms, pascals).

Time step: explicit MPM is stable for ``dt <= CFL dx / (c + |v|)`` with ``c`` the P-wave speed
``sqrt((lambda + 2 mu) / rho)`` (``sqrt(K / rho)`` for the fluid) (:meth:`MPMSimulator.substeps_for`). A stored
frame is ``substeps`` MPM substeps of ``frame_dt / substeps`` each, so the stored ``dt`` is an exact multiple of the
MPM substep.

Simulator choice: NVIDIA warp (``warp-lang``), not taichi. Both install here from the package registry as plain
wheels and both JIT-compile kernels for the CPU. Measured on this 2-core machine with the same mpm88 2D fluid
(8192 particles, 128^2 grid, both niced under a concurrent training run): warp 0.50 ms per substep, taichi 0.79 ms
per substep with one thread; first compile 2.7 s (warp) vs 0.6 s (taichi); both cache compiled kernels on disk.
Warp was picked because (1) its CPU backend runs a kernel serially, so the atomic scatter of P2G adds in a fixed
order and a seed gives bit-identical trajectories (taichi's multithreaded CPU backend adds atomics in a
nondeterministic order); (2) it was faster per substep here; (3) it supports current numpy / Python and keeps
being released (taichi 1.7.4, July 2025, is its last release), and runs the same kernels on a CUDA GPU if one is
present (this module pins ``device="cpu"`` for reproducibility).
"""

import ctypes.util
import math
import os
import sys
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace

import numpy as np
import warp as wp

MATERIALS = ("elastic", "fluid", "sand", "plasticine")
WALLS = ("slip", "sticky")
BOUNDARY_CELLS = 3  # grid padding beyond each wall, cells
GRAVITY = 9.81  # m/s^2, along -axis D - 1
CFL = 0.3  # substep = CFL * dx / (wave speed + max speed)
_ELASTIC, _FLUID, _SAND, _PLASTICINE = range(4)
_SIGMA_MIN = 1e-3  # smallest singular value kept (Hencky strain log(Sigma) needs Sigma > 0)
_J_RANGE = (0.2, 5.0)  # volume ratios kept by the fluid (stops a runaway particle from producing inf / NaN)

wp.config.log_level = max(wp.config.log_level, wp.LOG_WARNING)  # no banner / "module loaded" lines on stdout


@dataclass(frozen=True)
class Material:
    """A material and its parameters (SI units).

    Attributes:
        name: one of :data:`MATERIALS`.
        density: kg/m^3.
        youngs_modulus: E, Pa (elastic, sand, plasticine).
        poisson_ratio: nu in [0, 0.5) (elastic, sand, plasticine).
        friction_angle: degrees (sand).
        yield_stress: Pa, the limit on the Frobenius norm of the deviatoric Kirchhoff stress (plasticine).
        bulk_modulus: K, Pa (fluid).
        viscosity: dynamic viscosity eta, Pa s (fluid).
    """

    name: str
    density: float = 1000.0
    youngs_modulus: float = 1e5
    poisson_ratio: float = 0.3
    friction_angle: float = 30.0
    yield_stress: float = 3e3
    bulk_modulus: float = 4e5
    viscosity: float = 0.01

    def __post_init__(self) -> None:
        if self.name not in MATERIALS:
            raise ValueError(f"Material: unknown {self.name!r}; expected one of {', '.join(MATERIALS)}")
        if not (self.density > 0 and self.youngs_modulus > 0 and 0 <= self.poisson_ratio < 0.5
                and 0 <= self.friction_angle < 90 and self.yield_stress > 0 and self.bulk_modulus > 0
                and self.viscosity >= 0):
            raise ValueError(f"Material: parameters out of range: {self}")

    def lame(self) -> tuple[float, float]:
        """(mu, lambda) in Pa from Young's modulus and Poisson ratio."""
        e, nu = self.youngs_modulus, self.poisson_ratio
        return e / (2 * (1 + nu)), e * nu / ((1 + nu) * (1 - 2 * nu))

    def wave_speed(self) -> float:
        """P-wave (fluid: sound) speed, m/s: ``sqrt((lambda + 2 mu) / rho)`` or ``sqrt(K / rho)``."""
        if self.name == "fluid":
            return math.sqrt(self.bulk_modulus / self.density)
        mu, lam = self.lame()
        return math.sqrt((lam + 2 * mu) / self.density)

    def params(self) -> dict[str, float | str]:
        """The parameters this material uses, as a JSON-ready dict (names as the attributes)."""
        keys = {"elastic": ("youngs_modulus", "poisson_ratio"), "fluid": ("bulk_modulus", "viscosity"),
                "sand": ("youngs_modulus", "poisson_ratio", "friction_angle"),
                "plasticine": ("youngs_modulus", "poisson_ratio", "yield_stress")}[self.name]
        return {"material": self.name, "density": float(self.density), **{k: float(getattr(self, k)) for k in keys}}


# ------------------------------------------------------------------------------------------------- kernels

@wp.func
def _svd(F: wp.mat22):
    return wp.svd2(F)


@wp.func
def _svd(F: wp.mat33):  # noqa: F811 (a warp overload, picked by argument type)
    return wp.svd3(F)


@cache
def _kernels(dim: int) -> SimpleNamespace:
    """The MLS-MPM kernels for ``dim`` = 2 or 3 (compiled by warp on first launch, cached on disk)."""
    D = dim
    vec_t = wp.types.vector(D, float)
    mat_t = wp.types.matrix((D, D), float)
    rows_t = wp.types.matrix((3, D), float)
    sigma_min, j_lo, j_hi = _SIGMA_MIN, _J_RANGE[0], _J_RANGE[1]

    @wp.func
    def stencil(xp: vec_t, inv_dx: float, pad: float):
        """Base node (as floats), fractional offset fx in grid units, and B-spline weights rows (w0; w1; w2)."""
        gx = xp * inv_dx + vec_t(pad)
        base = vec_t()
        for d in range(D):
            base[d] = wp.floor(gx[d] - 0.5)
        fx = gx - base
        w0 = 0.5 * wp.cw_mul(vec_t(1.5) - fx, vec_t(1.5) - fx)
        w1 = vec_t(0.75) - wp.cw_mul(fx - vec_t(1.0), fx - vec_t(1.0))
        w2 = 0.5 * wp.cw_mul(fx - vec_t(0.5), fx - vec_t(0.5))
        return base, fx, wp.matrix_from_rows(w0, w1, w2)

    @wp.func
    def node_weight(base: vec_t, off: vec_t, w: rows_t, G: int):
        """Flat index of node ``base + off`` on a G^D grid and its weight."""
        index = int(0)  # noqa: UP018 (warp: a typed variable, mutated in the loop)
        weight = float(1.0)  # noqa: UP018
        for d in range(D):
            o = int(off[d])
            index = index * G + int(base[d]) + o
            weight = weight * w[o, d]
        return index, weight

    @wp.func
    def kirchhoff(kind: int, F: mat_t, C: mat_t, mu: float, lam: float, visc: float, plastic: float):
        """Plastic return mapping and Kirchhoff stress: returns (new F, tau)."""
        I = wp.identity(n=D, dtype=float)
        tau = mat_t()
        if kind == 1:  # fluid: keep J only
            J = wp.clamp(wp.determinant(F), j_lo, j_hi)
            F = I * wp.pow(J, 1.0 / float(D))
            tau = (lam * J * (J - 1.0)) * I + (J * visc) * (C + wp.transpose(C))
        elif kind == 0:  # fixed corotated
            U, s, V = _svd(F)
            R = U @ wp.transpose(V)
            J = wp.determinant(F)
            tau = 2.0 * mu * (F - R) @ wp.transpose(F) + (lam * J * (J - 1.0)) * I
        else:  # Hencky-strain StVK with a Drucker-Prager (sand) or von Mises (plasticine) return mapping
            U, s, V = _svd(F)
            eps = vec_t()
            for d in range(D):
                eps[d] = wp.log(wp.max(wp.abs(s[d]), sigma_min))
            tr = float(0.0)  # noqa: UP018
            for d in range(D):
                tr = tr + eps[d]
            dev = eps - vec_t(tr / float(D))
            norm = wp.length(dev)
            if kind == 2:
                if tr > 0.0 or norm <= 0.0:
                    eps = vec_t()  # expansion: the cone's tip, no stress
                else:
                    dgamma = norm + (float(D) * lam + 2.0 * mu) / (2.0 * mu) * tr * plastic
                    if dgamma > 0.0:
                        eps = eps - (dgamma / norm) * dev
            else:
                dgamma = norm - plastic / (2.0 * mu)
                if dgamma > 0.0:
                    eps = eps - (dgamma / norm) * dev
            s_new = vec_t()
            stress_diag = vec_t()
            tr_new = float(0.0)  # noqa: UP018
            for d in range(D):
                tr_new = tr_new + eps[d]
            for d in range(D):
                s_new[d] = wp.exp(eps[d])
                stress_diag[d] = 2.0 * mu * eps[d] + lam * tr_new
            F = U @ wp.diag(s_new) @ wp.transpose(V)
            tau = U @ wp.diag(stress_diag) @ wp.transpose(U)
        return F, tau

    @wp.kernel(module="unique", enable_backward=False)  # forward only: faster compile
    def p2g(x: wp.array(dtype=vec_t), v: wp.array(dtype=vec_t), C: wp.array(dtype=mat_t),
            F: wp.array(dtype=mat_t), kind: wp.array(dtype=wp.int32), mu: wp.array(dtype=float),
            lam: wp.array(dtype=float), visc: wp.array(dtype=float), plastic: wp.array(dtype=float),
            vol: wp.array(dtype=float), mass: wp.array(dtype=float), offsets: wp.array(dtype=vec_t),
            grid_mv: wp.array(dtype=vec_t), grid_m: wp.array(dtype=float), dx: float, pad: float, G: int,
            dt: float):
        p = wp.tid()
        inv_dx = 1.0 / dx
        base, fx, w = stencil(x[p], inv_dx, pad)
        Cp = C[p]
        Fp = (wp.identity(n=D, dtype=float) + dt * Cp) @ F[p]
        Fp, tau = kirchhoff(kind[p], Fp, Cp, mu[p], lam[p], visc[p], plastic[p])
        F[p] = Fp
        m = mass[p]
        affine = (-dt * vol[p] * 4.0 * inv_dx * inv_dx) * tau + m * Cp
        mv = m * v[p]
        for o in range(offsets.shape[0]):
            off = offsets[o]
            index, weight = node_weight(base, off, w, G)
            dpos = (off - fx) * dx
            wp.atomic_add(grid_mv, index, weight * (mv + affine @ dpos))
            wp.atomic_add(grid_m, index, weight * m)

    @wp.kernel(module="unique", enable_backward=False)  # forward only: faster compile
    def grid_update(grid_mv: wp.array(dtype=vec_t), grid_m: wp.array(dtype=float), gravity: vec_t, G: int,
                    lo: int, hi: int, sticky: int, dt: float):
        n = wp.tid()
        m = grid_m[n]
        vn = vec_t()
        if m > 0.0:
            vn = grid_mv[n] / m + dt * gravity
            rest = n
            for k in range(D):
                d = D - 1 - k
                c = rest % G
                rest = rest // G
                if c <= lo:
                    if sticky != 0:
                        vn = vec_t()
                    elif vn[d] < 0.0:
                        vn[d] = 0.0
                if c >= hi:
                    if sticky != 0:
                        vn = vec_t()
                    elif vn[d] > 0.0:
                        vn[d] = 0.0
        grid_mv[n] = vn

    @wp.kernel(module="unique", enable_backward=False)  # forward only: faster compile
    def g2p(x: wp.array(dtype=vec_t), v: wp.array(dtype=vec_t), C: wp.array(dtype=mat_t),
            offsets: wp.array(dtype=vec_t), grid_v: wp.array(dtype=vec_t), dx: float, pad: float, G: int,
            dt: float):
        p = wp.tid()
        inv_dx = 1.0 / dx
        base, fx, w = stencil(x[p], inv_dx, pad)
        vp = vec_t()
        Cp = mat_t()
        for o in range(offsets.shape[0]):
            off = offsets[o]
            index, weight = node_weight(base, off, w, G)
            gv = grid_v[index]
            vp = vp + weight * gv
            Cp = Cp + (weight * 4.0 * inv_dx * inv_dx) * wp.outer(gv, (off - fx) * dx)
        v[p] = vp
        C[p] = Cp
        xn = x[p] + dt * vp
        for d in range(D):
            xn[d] = wp.clamp(xn[d], 0.0, 1.0)
        x[p] = xn

    return SimpleNamespace(vec=vec_t, mat=mat_t, p2g=p2g, grid_update=grid_update, g2p=g2p)


# ----------------------------------------------------------------------------------------------- simulator

_warp_ready = False


def _init_warp() -> None:
    """``wp.init()``; on a machine without a CUDA driver, without warp's native "no CUDA driver" line on stderr."""
    global _warp_ready
    if _warp_ready:
        return
    if ctypes.util.find_library("cuda") is not None:
        wp.init()
    else:  # the warning is printed by C code: silence file descriptor 2 during the call
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
            wp.init()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
    _warp_ready = True


class MPMSimulator:
    """An MLS-MPM simulation of particles in the box ``[0, 1]^D`` (see the module docstring).

    Args:
        dim: 2 or 3.
        n_grid: grid cells across the box (``dx = 1 / n_grid`` metres); about two particles per cell and axis
            is the usual MPM resolution.
        walls: ``"slip"`` or ``"sticky"``.
        gravity: m/s^2 along ``-axis dim - 1``.

    Example (``tests/geo3d/synth/test_particles_synth.py`` runs it; the kernels' first JIT compile takes
    about a minute, too long for a docstring example)::

        sim = MPMSimulator(2, 32)
        sim.set_particles(x0, v0, Material("elastic"), volume=(1 / 64) ** 2)
        positions = sim.rollout(steps=50, frame_dt=0.0025)  # (50, N, 2) float32 metres
    """

    def __init__(self, dim: int, n_grid: int, walls: str = "slip", gravity: float = GRAVITY):
        if dim not in (2, 3):
            raise ValueError(f"MPMSimulator: dim must be 2 or 3, got {dim}")
        if n_grid < 4:
            raise ValueError(f"MPMSimulator: n_grid must be >= 4, got {n_grid}")
        if walls not in WALLS:
            raise ValueError(f"MPMSimulator: walls must be one of {WALLS}, got {walls!r}")
        _init_warp()
        self.dim, self.n_grid, self.walls, self.gravity = dim, int(n_grid), walls, float(gravity)
        self.dx = 1.0 / self.n_grid
        self.pad = BOUNDARY_CELLS
        self.G = self.n_grid + 2 * self.pad + 2  # nodes per axis: padding, the box, one more for the stencil
        self._k = _kernels(dim)
        self._device = "cpu"
        offsets = np.stack(np.meshgrid(*[np.arange(3)] * dim, indexing="ij"), -1).reshape(-1, dim)
        self._offsets = wp.array(offsets.astype(np.float32), dtype=self._k.vec, device=self._device)
        self._grid_mv = wp.zeros(self.G**dim, dtype=self._k.vec, device=self._device)
        self._grid_m = wp.zeros(self.G**dim, dtype=float, device=self._device)
        self._n = 0
        self.materials: list[Material] = []

    def set_particles(self, positions: np.ndarray, velocities: np.ndarray, material: Material | list[Material],
                      volume: float | np.ndarray, material_index: np.ndarray | None = None) -> None:
        """Place particles (replacing any), undeformed (``F = I``, ``C = 0``).

        Args:
            positions: (N, D) float metres inside ``[0, 1]^D``.
            velocities: (N, D) float m/s.
            material: one Material for all particles, or a list indexed by ``material_index``.
            volume: initial volume per particle, m^3 (m^2 in 2D): a scalar or (N,).
            material_index: (N,) int index into ``material`` when it is a list.
        """
        x = np.asarray(positions, np.float32)
        v = np.asarray(velocities, np.float32)
        n, d = x.shape
        if d != self.dim or v.shape != x.shape:
            raise ValueError(f"set_particles: expected positions and velocities (N, {self.dim}), got {x.shape}, "
                             f"{v.shape}")
        if not (np.isfinite(x).all() and np.isfinite(v).all()) or x.min() < 0 or x.max() > 1:
            raise ValueError("set_particles: positions must be finite and inside [0, 1]^D, velocities finite")
        materials = [material] if isinstance(material, Material) else list(material)
        index = np.zeros(n, np.int64) if material_index is None else np.asarray(material_index, np.int64)
        vol = np.broadcast_to(np.asarray(volume, np.float64), (n,))
        kinds = np.array([MATERIALS.index(m.name) for m in materials])[index]
        table = np.array([_material_row(m) for m in materials], np.float64)[index]  # mu, lam, visc, plastic, rho
        self.materials, self._n = materials, n
        dev, k = self._device, self._k
        self._x = wp.array(x, dtype=k.vec, device=dev)
        self._v = wp.array(v, dtype=k.vec, device=dev)
        self._C = wp.zeros(n, dtype=k.mat, device=dev)
        self._F = wp.array(np.tile(np.eye(self.dim, dtype=np.float32), (n, 1, 1)), dtype=k.mat, device=dev)
        self._kind = wp.array(kinds.astype(np.int32), dtype=wp.int32, device=dev)
        self._mu, self._lam, self._visc, self._plastic = (
            wp.array(table[:, i].astype(np.float32), dtype=float, device=dev) for i in range(4))
        self._vol = wp.array(vol.astype(np.float32), dtype=float, device=dev)
        self._mass = wp.array((vol * table[:, 4]).astype(np.float32), dtype=float, device=dev)
        self._max_wave_speed = max(m.wave_speed() for m in materials)

    @property
    def num_particles(self) -> int:
        return self._n

    def positions(self) -> np.ndarray:
        """(N, D) float32 current positions, metres."""
        return self._x.numpy().copy()

    def velocities(self) -> np.ndarray:
        """(N, D) float32 current particle velocities, m/s."""
        return self._v.numpy().copy()

    def substeps_for(self, frame_dt: float, max_speed: float) -> int:
        """Substeps per frame of ``frame_dt`` seconds so that ``dt <= CFL dx / (wave speed + max_speed)``.

        Args:
            frame_dt: seconds per stored frame.
            max_speed: the largest particle speed expected, m/s.
        """
        if not self._n:
            raise RuntimeError("substeps_for: set_particles first")
        dt_max = CFL * self.dx / (self._max_wave_speed + max_speed)
        visc = max((m.viscosity / m.density for m in self.materials if m.name == "fluid"), default=0.0)
        if visc > 0:  # explicit viscosity: dt <= dx^2 / (2 D nu)
            dt_max = min(dt_max, 0.5 * self.dx**2 / (2 * self.dim * visc))
        return max(1, math.ceil(frame_dt / dt_max - 1e-9))

    def step(self, frame_dt: float, substeps: int) -> None:
        """Advance ``frame_dt`` seconds in ``substeps`` equal MPM substeps."""
        k, dev = self._k, self._device
        dt = float(frame_dt) / int(substeps)
        g = k.vec(*([0.0] * (self.dim - 1) + [-self.gravity]))
        lo, hi, sticky = self.pad, self.pad + self.n_grid, int(self.walls == "sticky")
        particles = [self._x, self._v, self._C, self._F, self._kind, self._mu, self._lam, self._visc, self._plastic,
                     self._vol, self._mass, self._offsets, self._grid_mv, self._grid_m, self.dx, float(self.pad),
                     self.G, dt]
        for _ in range(int(substeps)):
            self._grid_mv.zero_()
            self._grid_m.zero_()
            wp.launch(k.p2g, self._n, particles, device=dev)
            wp.launch(k.grid_update, self.G**self.dim, [self._grid_mv, self._grid_m, g, self.G, lo, hi, sticky, dt],
                      device=dev)
            wp.launch(k.g2p, self._n, [self._x, self._v, self._C, self._offsets, self._grid_mv, self.dx,
                                       float(self.pad), self.G, dt], device=dev)

    def rollout(self, steps: int, frame_dt: float, substeps: int) -> np.ndarray:
        """Simulate ``steps - 1`` frames from the current state.

        Returns:
            (steps, N, D) float32 positions in metres, ``frame_dt`` seconds apart; frame 0 is the current state.
        """
        out = np.empty((steps, self._n, self.dim), np.float32)
        out[0] = self.positions()
        for t in range(1, steps):
            self.step(frame_dt, substeps)
            out[t] = self._x.numpy()
        return out


def _material_row(m: Material) -> tuple[float, float, float, float, float]:
    """Per-particle kernel parameters (mu, lambda, viscosity, plastic parameter, density) of a material.

    The plastic parameter is the Drucker-Prager ``alpha`` for sand, the yield stress (Pa) for plasticine, 0
    otherwise; the fluid's bulk modulus goes in lambda (``tau = K J (J - 1) I``) and mu is unused.
    """
    if m.name == "fluid":
        return 0.0, m.bulk_modulus, m.viscosity, 0.0, m.density
    mu, lam = m.lame()
    plastic = 0.0
    if m.name == "sand":
        sin_phi = math.sin(math.radians(m.friction_angle))
        plastic = math.sqrt(2.0 / 3.0) * 2.0 * sin_phi / (3.0 - sin_phi)
    elif m.name == "plasticine":
        plastic = m.yield_stress
    return mu, lam, 0.0, plastic, m.density
