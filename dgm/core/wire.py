"""How the server and its worker processes talk: ``send`` and ``recv`` of any picklable object over a
``multiprocessing`` connection, tensors carried as numpy arrays (``pack``, ``unpack``).

(Its own module because the zygote runs ``dgm.core.worker_main`` as ``__main__``: a class defined there would be
another class in the processes that import it by name, and a message's arrays would not be recognised.)"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch


def send(conn: Connection, obj: Any) -> None:
    """Plain pickle, tensors copied into the message, as numpy arrays (``pack``). (Connection.send would use
    torch's reductions for multiprocessing, which move every tensor into shared memory: slower for small
    tensors, and the memory vanishes when the sender exits first.)"""
    conn.send_bytes(pickle.dumps(pack(obj), protocol=pickle.HIGHEST_PROTOCOL))


def recv(conn: Connection) -> Any:
    return unpack(pickle.loads(conn.recv_bytes()))


class _Array:
    """A tensor in a message, as the numpy array of its memory (see ``pack``)."""

    __slots__ = ("a",)

    def __init__(self, a: np.ndarray):
        self.a = a

    def __reduce__(self):
        return _Array, (self.a,)


#: what ``pack`` and ``unpack`` pass over at once (a history's thousands of numbers)
_ATOMS = {float, int, str, bool, type(None), np.ndarray, np.float64, np.float32, np.int64, np.bool_}
#: the dtypes a tensor travels as a numpy array in
_NUMPY_DTYPES = {torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8,
                 torch.uint8, torch.bool}


def pack(obj: Any, memo: dict[int, _Array] | None = None) -> Any:
    """``obj`` with every plain, contiguous CPU tensor in its dicts, lists and tuples replaced by its numpy
    array: a run's whole state (a few hundred tensors) pickles that way in a fifth of the time, and unpickles
    in a tenth (the flows page's: 126 -> 15 ms in all, the arena's 380 -> 58 ms), which a Pause, a Play and a
    Step wait for. The same bytes, the same tensor object once (``memo``); anything else (other containers,
    a tensor of another kind) is pickled as it is. ``unpack`` undoes it."""
    memo = {} if memo is None else memo
    if type(obj) is torch.Tensor:
        if obj.device.type != "cpu" or obj.requires_grad or obj.dtype not in _NUMPY_DTYPES or obj.is_conj() \
                or obj.is_neg() or obj.layout != torch.strided or not obj.is_contiguous():
            return obj
        if id(obj) not in memo:
            memo[id(obj)] = _Array(obj.numpy())
        return memo[id(obj)]
    return _inside(obj, lambda v: pack(v, memo))


def unpack(obj: Any, memo: dict[int, torch.Tensor] | None = None) -> Any:
    """What ``pack`` made, back: each array a tensor on its memory (one tensor per array: ``memo``)."""
    memo = {} if memo is None else memo
    if type(obj) is _Array:
        if id(obj) not in memo:
            memo[id(obj)] = torch.from_numpy(obj.a)
        return memo[id(obj)]
    return _inside(obj, lambda v: unpack(v, memo))


def _inside(obj: Any, f) -> Any:
    """A dict, OrderedDict, list or tuple with ``f`` applied to each of its items but atoms; anything else as it
    is. (A state_dict's attributes, its ``_metadata`` of module versions, go along.)"""
    if type(obj) is dict:
        return {k: v if type(v) in _ATOMS else f(v) for k, v in obj.items()}
    if type(obj) is OrderedDict:
        out = OrderedDict((k, v if type(v) in _ATOMS else f(v)) for k, v in obj.items())
        out.__dict__.update(obj.__dict__)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(v if type(v) in _ATOMS else f(v) for v in obj)
    return obj
