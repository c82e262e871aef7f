"""Reading a Lightning checkpoint's plain data without running any of its code (and without torch).

A checkpoint is a pickle, and unpickling runs whatever callables the file names: a crafted
``.ckpt`` can run ``os.system`` when loaded. The monitor only needs plain data (the callback
state: dicts, lists, strings, numbers), so this module reads the checkpoint's ``data.pkl`` from
its zip archive with an unpickler that **resolves no global to real code**:

* a handful of harmless constructors are real (``collections.OrderedDict``, ``set``,
  ``frozenset``, and ``_codecs.encode`` restricted to Latin-1, which is how ``bytes`` are pickled);
* tensors become :class:`TensorRef` placeholders; their storage (``data/<key>`` in the archive)
  is read only if asked for (:func:`materialise`), so a large model's weights are never read;
* every other global (``os.system``, a model's config class, ``torch.device``, ...) becomes an
  inert placeholder type: calling, building or filling it only records its arguments. Those
  that are not part of PyTorch's own tensor format are listed in :attr:`Checkpoint.ignored`.

Nothing from the file is imported or called, so a hostile file can at worst make its own
placeholders; :func:`plain_data` then refuses any placeholder inside the part that is used.
Legacy (non-zip, PyTorch < 1.6) checkpoints go through ``torch.load(weights_only=True)``.

Example::

    from lightning_complexity.checkpoint_reader import read_checkpoint
    checkpoint = read_checkpoint("runs/x/checkpoints/last.ckpt")
    checkpoint.data["callbacks"].keys()      # dict_keys(['ComplexityMonitor{...}', 'ModelCheckpoint{...}'])
    checkpoint.ignored                       # () for a plain Lightning checkpoint
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Checkpoint", "Placeholder", "TensorRef", "UnreadableCheckpoint", "materialise", "plain_data", "read_checkpoint"]

_PICKLE_NAME = "data.pkl"

def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # How protocol 2 pickles bytes: _codecs.encode(str, "latin1"). No other codec is looked up.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is only read for latin1 text, not {encoding!r}")
    return codecs.encode(text, "latin1")


#: globals resolved to the real thing: constructors of plain values that run nothing else.
_REAL_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
}
_TENSOR_REBUILDERS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}
_PARAMETER_REBUILDERS = {("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state")}
#: storage classes of PyTorch's format, and the numpy dtype of their elements (None: no numpy dtype).
_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": None,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_, "ComplexDoubleStorage": np.complex128, "ComplexFloatStorage": np.complex64,
    "UntypedStorage": np.uint8,
}


class UnreadableCheckpoint(ValueError):
    """The file is not a PyTorch checkpoint this reader can parse, or holds code where data was expected.

    Attributes:
        path: the file.
        reason: what is wrong, without the path (the message is ``"<path>: <reason>"``).
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class Placeholder:
    """An inert stand-in for a global the file names: it records what the file did with it, nothing more.

    One subclass is made per global (``Placeholder.qualname`` says which), so that pickle's
    ``NEWOBJ`` (which needs a class) works too.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        instance = super().__new__(cls)
        instance.args, instance.kwargs, instance.state, instance.items = args, kwargs, None, []
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # arguments were kept by __new__
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:
        # e.g. getattr(SomeClass, "method")(...): calling a placeholder only makes another one
        return type(self)(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<not loaded: {self.qualname}>"


@dataclass(frozen=True)
class StorageRef:
    """Where a tensor's bytes are in the archive (``data/<key>``), and their element type."""

    key: str
    storage_type: str
    numel: int


@dataclass
class TensorRef:
    """A tensor of the checkpoint, not read: its storage, offset, shape and strides (in elements)."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def __repr__(self) -> str:
        return f"TensorRef({self.storage.storage_type}, shape={self.shape})"


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` found.

    Attributes:
        path: the file read.
        data: the unpickled object tree (tensors as :class:`TensorRef`, unknown globals as
            :class:`Placeholder` instances).
        ignored: globals outside PyTorch's tensor format that the file names and that were
            neither imported nor run (e.g. ``"os.system"``, ``"mypackage.Config"``), sorted.
    """

    path: Path
    data: Any
    ignored: tuple[str, ...] = ()
    storage_prefix: str | None = field(default=None, repr=False)

    def read_storage(self, storage: StorageRef) -> bytes:
        """The raw bytes of one storage (little-endian, as PyTorch writes them)."""
        if self.storage_prefix is None:
            raise UnreadableCheckpoint(self.path, "storages can only be read from a zip checkpoint")
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(f"{self.storage_prefix}data/{storage.key}")


def _is_pytorch_format(module: str) -> bool:
    return module == "torch" or module.startswith("torch.")


class _InertUnpickler(pickle.Unpickler):
    """An unpickler whose globals are plain constructors, tensor references or inert placeholders."""

    def __init__(self, stream: io.BytesIO) -> None:
        super().__init__(stream)
        self.ignored: set[str] = set()
        self._placeholders: dict[str, type[Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names, as protocol 2 writes them (``__builtin__.set``): pickle's own mapping.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _REAL_GLOBALS:
            return _REAL_GLOBALS[key]
        if key in _TENSOR_REBUILDERS:
            return _tensor_ref
        if key in _PARAMETER_REBUILDERS:
            return _parameter_data
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # a storage type is only ever used inside a persistent id
        qualname = f"{module}.{name}"
        if not _is_pytorch_format(module):
            self.ignored.add(qualname)
        if qualname not in self._placeholders:
            self._placeholders[qualname] = type("Placeholder", (Placeholder,), {"qualname": qualname})
        return self._placeholders[qualname]

    def persistent_load(self, pid: Any) -> Any:
        # PyTorch's zip format: ("storage", storage_type, key, location, numel).
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage":
            storage_type = pid[1] if isinstance(pid[1], str) else getattr(pid[1], "qualname", "?").rpartition(".")[2]
            return StorageRef(key=str(pid[2]), storage_type=storage_type, numel=int(pid[4]))
        raise pickle.UnpicklingError(f"unsupported persistent id {type(pid).__name__}")


def _tensor_ref(storage: Any, offset: Any, shape: Any, stride: Any, *_: Any) -> Any:
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("a tensor without a storage")
    return TensorRef(storage, int(offset), tuple(int(s) for s in shape), tuple(int(s) for s in stride))


def _parameter_data(data: Any, *_: Any) -> Any:
    return data  # a Parameter is its tensor


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint's object tree without running or importing anything it names.

    Raises:
        UnreadableCheckpoint: not a zip-format PyTorch checkpoint nor a legacy one that
            ``torch.load(weights_only=True)`` reads, or a corrupt pickle.

    Example::

        read_checkpoint("last.ckpt").data["global_step"]
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return _read_legacy(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = sorted((n for n in archive.namelist() if n.endswith("/" + _PICKLE_NAME)), key=len)
            if not pickles:
                raise UnreadableCheckpoint(path, f"a zip archive without <name>/{_PICKLE_NAME}, so not a PyTorch checkpoint")
            member = pickles[0]
            payload = archive.read(member)
    except (zipfile.BadZipFile, OSError) as error:
        raise UnreadableCheckpoint(path, f"not a readable zip archive ({error})") from error
    unpickler = _InertUnpickler(io.BytesIO(payload))
    try:
        data = unpickler.load()
    except Exception as error:  # noqa: BLE001 - any corrupt pickle gets the same clear message
        raise UnreadableCheckpoint(path, f"its {member} could not be parsed ({type(error).__name__}: {error})") from error
    return Checkpoint(path=path, data=data, ignored=tuple(sorted(unpickler.ignored)), storage_prefix=member[: -len(_PICKLE_NAME)])


def _read_legacy(path: Path) -> Checkpoint:
    try:
        with path.open("rb") as handle:
            first = handle.read(1)
    except OSError as error:
        raise UnreadableCheckpoint(path, f"cannot be opened ({error})") from error
    if first != b"\x80":  # every pickle of protocol 2 or later starts with PROTO
        raise UnreadableCheckpoint(path, "neither a zip archive nor a pickle, so not a PyTorch checkpoint")
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        text = str(error).strip().splitlines()
        raise UnreadableCheckpoint(path, f"torch.load(weights_only=True) refused it ({type(error).__name__}: {text[0] if text else 'no message'})") from error
    return Checkpoint(path=path, data=_tensors_as_arrays(data))


def _tensors_as_arrays(value: Any) -> Any:
    # torch.load gave real tensors (legacy files): turn them into the plain values plain_data accepts.
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().tolist()
    if isinstance(value, dict):
        return type(value)((k, _tensors_as_arrays(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_tensors_as_arrays(v) for v in value)
    return value


def materialise(checkpoint: Checkpoint, tensor: TensorRef) -> Any:
    """A tensor's values as nested Python lists (a 0-d tensor as a number), read from the archive.

    Example::

        materialise(checkpoint, checkpoint.data["state_dict"]["fc.bias"])   # [0.1, -0.3, ...]
    """
    dtype = _STORAGE_DTYPES.get(tensor.storage.storage_type)
    if dtype is None:
        raise UnreadableCheckpoint(checkpoint.path, f"a {tensor.storage.storage_type} tensor cannot be read without torch")
    flat = np.frombuffer(checkpoint.read_storage(tensor.storage), dtype=np.dtype(dtype).newbyteorder("<"))
    if any(s < 0 for s in tensor.stride) or (tensor.shape and tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride)) >= len(flat)):
        raise UnreadableCheckpoint(checkpoint.path, f"a tensor's shape {tensor.shape} and strides {tensor.stride} lie outside its storage")
    if not tensor.shape:
        return flat[tensor.offset].item()
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset:], shape=tensor.shape, strides=[s * flat.itemsize for s in tensor.stride], writeable=False)
    return view.tolist()


_PLAIN_SCALARS = (str, int, float, bool, type(None), bytes)


def plain_data(checkpoint: Checkpoint, value: Any, where: str) -> Any:
    """``value`` (a part of ``checkpoint.data``) as plain Python data: tensors read, placeholders refused.

    Raises:
        UnreadableCheckpoint: ``value`` holds an object that would have run code when loaded
            (a :class:`Placeholder`), naming where (``where`` is the path of ``value``) and what.

    Example::

        plain_data(checkpoint, checkpoint.data["callbacks"]["ComplexityMonitor{...}"], "callbacks/ComplexityMonitor")
    """
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, TensorRef):
        return materialise(checkpoint, value)
    if isinstance(value, dict):
        return {key: plain_data(checkpoint, item, f"{where}/{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_data(checkpoint, item, f"{where}[{index}]") for index, item in enumerate(value))
    if isinstance(value, Placeholder):
        raise UnreadableCheckpoint(checkpoint.path, f"{where} holds a {value.qualname} object where plain data was expected; it was not loaded (nothing in the file was run)")
    raise UnreadableCheckpoint(checkpoint.path, f"{where} holds a {type(value).__name__} where plain data was expected")
