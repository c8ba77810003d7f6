"""FactoredMatrix: a matrix kept as A @ B (TransformerLens's definitions, in numpy)."""
from typing import Any, Tuple, Union

import numpy as np

from lensgrid.errors import InvalidInputError


def _t(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


class FactoredMatrix:
    """M = A @ B with A [..., ldim, mdim] and B [..., mdim, rdim] (leading axes broadcast).
    Never forms AB unless asked: shapes, AB, BA, T, svd (U, S, V with M = U diag(S) V^T),
    eigenvalues, norm, @ with arrays and other FactoredMatrix objects, [index]."""

    __array_ufunc__ = None  # numpy defers: `array @ fm` calls fm.__rmatmul__

    def __init__(self, A: Any, B: Any):
        A, B = np.asarray(A), np.asarray(B)
        if A.ndim < 2 or B.ndim < 2:
            raise InvalidInputError(f"FactoredMatrix needs matrices, got shapes {A.shape} and {B.shape}")
        if A.shape[-1] != B.shape[-2]:
            raise InvalidInputError("FactoredMatrix: A and B must match on the inner dimension, "
                                    f"shapes were A: {A.shape}, B: {B.shape}")
        self.ldim, self.mdim, self.rdim = A.shape[-2], A.shape[-1], B.shape[-1]
        try:
            lead = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        except ValueError:
            raise InvalidInputError(f"FactoredMatrix: leading dimensions of A {A.shape} and B "
                                    f"{B.shape} do not broadcast") from None
        self.A = np.broadcast_to(A, lead + (self.ldim, self.mdim))
        self.B = np.broadcast_to(B, lead + (self.mdim, self.rdim))
        self.shape: Tuple[int, ...] = tuple(lead) + (self.ldim, self.rdim)
        self._svd = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def AB(self) -> np.ndarray:
        return self.A @ self.B

    @property
    def BA(self) -> np.ndarray:
        if self.ldim != self.rdim:
            raise InvalidInputError(f"BA needs a square matrix, shape was {self.shape}")
        return self.B @ self.A

    @property
    def T(self) -> "FactoredMatrix":
        return FactoredMatrix(_t(self.B), _t(self.A))

    def svd(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """U [..., ldim, mdim], S [..., mdim], V [..., rdim, mdim] with AB = U diag(S) V^T,
        from the SVDs of the factors (float64 inside)."""
        if self._svd is None:
            A, B = self.A.astype(np.float64), self.B.astype(np.float64)
            Ua, Sa, Vha = np.linalg.svd(A, full_matrices=False)
            Ub, Sb, Vhb = np.linalg.svd(B, full_matrices=False)
            middle = Sa[..., :, None] * (Vha @ Ub) * Sb[..., None, :]
            Um, Sm, Vhm = np.linalg.svd(middle, full_matrices=False)
            dtype = np.result_type(self.A.dtype, self.B.dtype, np.float32)
            self._svd = ((Ua @ Um).astype(dtype), Sm.astype(dtype), (_t(Vhb) @ _t(Vhm)).astype(dtype))
        return self._svd

    @property
    def U(self) -> np.ndarray:
        return self.svd()[0]

    @property
    def S(self) -> np.ndarray:
        return self.svd()[1]

    @property
    def V(self) -> np.ndarray:
        return self.svd()[2]

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of AB, from the (mdim x mdim) BA: AB's nonzero eigenvalues."""
        return np.linalg.eigvals(self.BA.astype(np.float64))

    def norm(self) -> np.ndarray:
        """The Frobenius norm of AB, from the singular values."""
        return np.sqrt((self.S.astype(np.float64) ** 2).sum(-1)).astype(self.S.dtype)

    def collapse_l(self) -> np.ndarray:
        """S V^T: [..., mdim, rdim] (drops the orthogonal left factor U)."""
        return self.S[..., :, None] * _t(self.V)

    def collapse_r(self) -> np.ndarray:
        """U S: [..., ldim, mdim] (drops the orthogonal right factor V^T)."""
        return self.U * self.S[..., None, :]

    def unsqueeze(self, axis: int) -> "FactoredMatrix":
        return FactoredMatrix(np.expand_dims(self.A, axis), np.expand_dims(self.B, axis))

    def make_even(self) -> "FactoredMatrix":
        root = np.sqrt(self.S)
        return FactoredMatrix(self.U * root[..., None, :], root[..., :, None] * _t(self.V))

    def get_corner(self, k: int = 3) -> np.ndarray:
        return (self.A[..., :k, :] @ self.B[..., :, :k])[(0,) * (self.ndim - 2)]

    def __matmul__(self, other: Any) -> Union["FactoredMatrix", np.ndarray]:
        if isinstance(other, FactoredMatrix):
            return (self @ other.A) @ other.B
        other = np.asarray(other)
        if other.ndim == 1:
            return (self.A @ (self.B @ other[:, None]))[..., 0]
        if other.shape[-2] != self.rdim:
            raise InvalidInputError(f"FactoredMatrix {self.shape} @ array {other.shape}: inner "
                                    "dimensions differ")
        if self.rdim > self.mdim:
            return FactoredMatrix(self.A, self.B @ other)
        return FactoredMatrix(self.AB, other)

    def __rmatmul__(self, other: Any) -> Union["FactoredMatrix", np.ndarray]:
        other = np.asarray(other)
        if other.ndim == 1:
            return ((other[None, :] @ self.A) @ self.B)[..., 0, :]
        if other.shape[-1] != self.ldim:
            raise InvalidInputError(f"array {other.shape} @ FactoredMatrix {self.shape}: inner "
                                    "dimensions differ")
        if self.ldim > self.mdim:
            return FactoredMatrix(other @ self.A, self.B)
        return FactoredMatrix(other, self.AB)

    def __mul__(self, scalar: Any) -> "FactoredMatrix":
        if np.size(scalar) != 1:
            raise InvalidInputError("a FactoredMatrix multiplies by a scalar only")
        return FactoredMatrix(self.A * scalar, self.B)

    __rmul__ = __mul__

    def __getitem__(self, idx: Any) -> "FactoredMatrix":
        """Indexes the leading axes (then the rows and the columns) as TransformerLens: an int
        on the row or column axis keeps it as a length-1 axis."""
        if not isinstance(idx, tuple):
            idx = (idx,)
        n = len([i for i in idx if i is not None])
        lead = self.ndim - 2

        def keep(i):
            return slice(i, i + 1 if i != -1 else None) if isinstance(i, (int, np.integer)) else i
        if n <= lead:
            return FactoredMatrix(self.A[idx], self.B[idx])
        if n == lead + 1:
            idx = idx[:-1] + (keep(idx[-1]),)
            return FactoredMatrix(self.A[idx], self.B[idx[:-1]])
        if n == lead + 2:
            idx = idx[:-2] + (keep(idx[-2]), keep(idx[-1]))
            return FactoredMatrix(self.A[idx[:-1]], self.B[idx[:-2] + (slice(None), idx[-1])])
        raise InvalidInputError(f"{idx} is too long an index for a FactoredMatrix of shape {self.shape}")

    def __repr__(self) -> str:
        return f"FactoredMatrix: Shape({self.shape}), Hidden Dim({self.mdim})"


def composition_scores(left: FactoredMatrix, right: FactoredMatrix,
                       broadcast_dims: bool = True) -> np.ndarray:
    """TransformerLens's composition score: ||L_c R_c||_F / (||L_c||_F ||R_c||_F) with
    L_c = left.collapse_l() and R_c = right.collapse_r(); with broadcast_dims the result has the
    left's leading axes then the right's."""
    if broadcast_dims:
        r_lead, l_lead = right.ndim - 2, left.ndim - 2
        for i in range(l_lead):
            right = right.unsqueeze(i)
        for i in range(r_lead):
            left = left.unsqueeze(i + l_lead)
    if left.rdim != right.ldim:
        raise InvalidInputError(f"composition scores need left.rdim == right.ldim, shapes were "
                                f"left: {left.shape}, right: {right.shape}")
    new_right, new_left = right.collapse_r(), left.collapse_l()
    r_norms = np.linalg.norm(new_right, axis=(-2, -1))
    l_norms = np.linalg.norm(new_left, axis=(-2, -1))
    comp = np.linalg.norm(new_left @ new_right, axis=(-2, -1))
    return comp / r_norms / l_norms
