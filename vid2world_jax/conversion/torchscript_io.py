"""The tensors of a TorchScript archive (``torch.jit.save``), read WITHOUT running any code from the file.

``torch.jit.load`` is not a data reader: a TorchScript archive carries TorchScript source (``code/*.py``) that
``torch.jit.load`` compiles and runs: a module's ``__setstate__`` executes during the load itself, ``forward`` and
every other method when the module is called. TorchScript cannot import Python modules or call ``os.system``,
but it runs any registered torch operator with any arguments the file's author chose, so the loaded values are
whatever that code makes them (tests/test_untrusted_pickle_files.py: a ``__setstate__`` that rewrites a buffer
runs under ``torch.jit.load`` and not here).

This reader treats the archive as a zip of data: ``<name>/data.pkl`` (the module tree) is unpickled with an
allow-list (tensor rebuild functions, storage types, OrderedDict, TorchScript's typed-list builders); TorchScript module classes (``__torch__.*``)
become inert attribute holders; tensor bytes come from ``<name>/data/<key>``; ``code/`` is never read. A module
that pickles a custom ``__getstate__`` (state not an attribute dict) is refused: its names exist only in its code.
Returns ``{dotted.attribute.path: torch.Tensor}``, i.e. ``state_dict()`` names for ordinary modules.
"""

from __future__ import annotations

import io
import pickle
import zipfile

_STORAGES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
             "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
             "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}


_JIT_LISTS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")


def _identity(x):
  return x


def _untag(value, type_str):
  del type_str
  return value


class UntrustedFileError(ValueError):
  """A weight file that would need code to load (message: one line)."""


class _ScriptModule:
  """Inert stand-in for a ``__torch__.*`` class: keeps the pickled attribute dict, runs nothing."""
  qualname = "?"
  _attrs = None

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise UntrustedFileError(f"{self.qualname} pickles a custom __getstate__ ({type(state).__name__} state): "
                               "its tensors can only be named by running its TorchScript code; refused")
    self._attrs = state


def _script_class(qualname: str) -> type:
  return type("ScriptModule", (_ScriptModule,), {"qualname": qualname})


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
  import torch
  del requires_grad, hooks, metadata
  if not size:
    return storage[offset:offset + 1].reshape(()).clone()
  return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data, requires_grad=False, hooks=None, *unused):
  del requires_grad, hooks, unused
  return data


class _Unpickler(pickle.Unpickler):
  def __init__(self, fileobj, zf: zipfile.ZipFile, prefix: str, path: str):
    super().__init__(fileobj)
    self._zf, self._prefix, self._path = zf, prefix, path

  def find_class(self, module, name):
    import collections
    if module.startswith("__torch__"):
      return _script_class(f"{module}.{name}")
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch" and name in _STORAGES:
      return _STORAGES[name]
    if module == "torch.jit._pickle" and name in _JIT_LISTS:   # typed lists of attributes (e.g. conv strides)
      return _identity
    if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
      return _untag
    raise UntrustedFileError(f"refused {self._path}: its pickle references {module}.{name}, which is not a "
                             "tensor or a module attribute (it would run code)")

  def persistent_load(self, pid):
    import torch
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _STORAGES.values()):
      raise UntrustedFileError(f"refused {self._path}: unknown persistent id {str(pid)[:80]}")
    dtype = getattr(torch, pid[1])
    raw = self._zf.read(f"{self._prefix}/data/{pid[2]}")
    n = int(pid[4])
    return torch.frombuffer(bytearray(raw), dtype=dtype)[:n] if raw else torch.empty(0, dtype=dtype)


def is_torchscript(path: str) -> bool:
  """True for a zip archive with ``<name>/code/`` and ``<name>/data.pkl`` (what ``torch.jit.save`` writes)."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
  return any("/code/" in n for n in names) and any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names)


def read_tensors(path: str) -> dict:
  """``{name: tensor}`` of every tensor attribute in the archive's module tree (see module docstring)."""
  with zipfile.ZipFile(path) as zf:
    pkls = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pkls) != 1:
      raise UntrustedFileError(f"{path}: not a TorchScript archive (no <name>/data.pkl)")
    prefix = pkls[0].split("/")[0]
    order = f"{prefix}/byteorder"
    if order in zf.namelist() and zf.read(order).decode().strip() != "little":
      raise UntrustedFileError(f"{path}: big-endian TorchScript archives are not supported")
    try:
      root = _Unpickler(io.BytesIO(zf.read(pkls[0])), zf, prefix, path).load()
    except UntrustedFileError:
      raise
    except (pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError) as e:
      raise UntrustedFileError(f"cannot read TorchScript archive {path}: {type(e).__name__}: {e}") from None
  out = {}
  _collect(root, "", out)
  if not out:
    raise UntrustedFileError(f"{path}: no tensors found in the TorchScript module tree")
  return out


def _collect(obj, prefix: str, out: dict) -> None:
  import torch
  if isinstance(obj, torch.Tensor):
    out[prefix.rstrip(".")] = obj
  elif isinstance(obj, _ScriptModule) and obj._attrs is not None:
    for k, v in obj._attrs.items():
      _collect(v, f"{prefix}{k}.", out)
