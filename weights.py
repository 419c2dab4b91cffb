"""Getting released weights onto the disk and into a state dict, without running anything the file contains.

download: a file from a URL into a cache folder, resumable, SHA-256 checked (OpenAI publishes each checkpoint's
digest as its URL's folder name; for a file without a published digest the first complete download's is recorded).
read_checkpoint: {name: tensor} from a TorchScript archive as OpenAI released CLIP (Radford et al. 2021), read as
data by a restricted unpickler, or from a plain torch.save'd state dict. read_viclip_state_dict: ViCLIP-B/16 as
published (a flat .safetensors file, or a .pth of its training code), and is_viclip_file, which tells the two
backbones' files apart by their tensor names. clip.load and viclip.load build on these. CLIPError is what they
raise: one line a user can act on.
"""
import hashlib
import http.client
import os
import pickle
import sys
import time
import urllib.request
import warnings
import zipfile
from collections import OrderedDict

import torch

DOWNLOAD_TIMEOUT = 60  # seconds without a byte before a download gives up; env MSTA_DOWNLOAD_TIMEOUT changes it
# The dtype of the raw bytes behind each storage class a TorchScript archive names.
_STORAGE_DTYPES = {"HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32}


class CLIPError(RuntimeError):
    """What loading CLIP or ViCLIP raises (this file, clip.py, viclip.py) for a bad model name, file, download or
    text, so callers can report it in one line."""


def _sha256(path):
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url, root, sha256="url", filename=None, timeout=None):
    """Path of url's file in root: a verified cached copy, or a fresh download checked against its SHA-256.

    sha256: the file's published digest; "url" (OpenAI's convention) means the folder name in the URL. None means
    no digest is published (viclip.py's Hugging Face file): then a complete download (its byte count equal to the
    server's Content-Length) has its SHA-256 recorded in <file>.sha256, and a cached copy is reused only while it
    still matches that record. That catches partial and corrupted files, not a file tampered with at the source.
    timeout: seconds of silence (no connection, or no byte) before giving up with a one-line CLIPError naming the
    URL and where to put the file by hand (default MSTA_DOWNLOAD_TIMEOUT or 60). A download cut short leaves
    <file>.part; the next call resumes it with an HTTP Range request, or starts over if the server answers with the
    whole file. The file gets its real name only once its SHA-256 is right."""
    os.makedirs(root, exist_ok=True)
    target = os.path.join(root, filename or os.path.basename(url))
    expected = url.split("/")[-2] if sha256 == "url" else sha256
    record = target + ".sha256"  # the first-use digest when none is published
    if timeout is None:
        timeout = float(os.environ.get("MSTA_DOWNLOAD_TIMEOUT", DOWNLOAD_TIMEOUT))
    if expected is None and os.path.isfile(target) and not os.path.isfile(record):
        with open(record, "w") as f:  # a file the user put there by hand (the offline route below): trusted as is
            f.write(_sha256(target))
    if os.path.isfile(target):
        if expected is None:
            with open(record) as f:
                known = f.read().strip()
        if _sha256(target) == (expected or known):
            return target  # e.g. a file OpenAI's own package already downloaded into ~/.cache/clip
        warnings.warn(f"{target} does not match its SHA-256 (corrupt or partial); downloading it again")
    partial = target + ".part"
    done = os.path.getsize(partial) if os.path.isfile(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    # Said before connecting: a slow or stalled network shows what is being waited for.
    print(f"downloading {url}\n  into {target}{f' (resuming after {done / 2**20:.1f} MiB)' if done else ''}",
          file=sys.stderr, flush=True)
    shown = 0.0  # when progress was last printed
    try:
        # The timeout bounds every socket wait (connect, each read), so a stalled network ends within it.
        with urllib.request.urlopen(request, timeout=timeout) as src:
            resumed = done > 0 and getattr(src, "status", None) == 206  # 206: the server sent the rest only
            h = hashlib.sha256()
            if resumed:
                with open(partial, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            else:
                done = 0  # no partial file, or a server that sent the whole file again: start over
            total = done + int(src.headers.get("Content-Length") or 0)
            with open(partial, "ab" if resumed else "wb") as dst:
                while chunk := src.read(1 << 16):  # small reads: progress shows from the first bytes
                    dst.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if time.time() - shown > 0.5 or done == total:
                        shown = time.time()
                        size = f" / {total / 2**20:.1f} MiB ({100 * done / total:.0f}%)" if total else " MiB"
                        print(f"\r  {done / 2**20:.1f}{size}", end="", file=sys.stderr, flush=True)
            if total and done < total:  # http.client returns b"" (no error) when the server hangs up early
                raise ConnectionError(f"the connection closed after {done / 2**20:.1f} of {total / 2**20:.1f} MiB; "
                                      "the next try resumes the partial file")
        print(file=sys.stderr)
    # URLError, timeouts and refused connections are OSErrors (so is a full disk); a connection closed before
    # Content-Length bytes is http.client's IncompleteRead.
    except (OSError, http.client.HTTPException) as e:
        if shown:
            print(file=sys.stderr)  # end the progress line
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = (f"no answer for {timeout:g} s; MSTA_DOWNLOAD_TIMEOUT=<seconds> waits longer, and the next "
                      "try resumes the partial file")
        raise CLIPError(f"could not download {url} ({reason}); without network, fetch that URL elsewhere "
                        f"and put the file at {target}") from e
    if expected is not None and h.hexdigest() != expected:
        os.remove(partial)
        raise CLIPError(f"downloaded {url} but its SHA-256 is {h.hexdigest()}, expected {expected}: "
                           "the file was corrupted or tampered with on the way; nothing was kept")
    if expected is None:
        with open(record, "w") as f:
            f.write(h.hexdigest())
    os.replace(partial, target)  # atomic: an interrupted download never sits under the real name
    return target


def read_torchscript(zf, names):
    """{name: tensor} of a TorchScript archive, read as data: its TorchScript code is never compiled or run.

    The archive is a zip: <root>/data.pkl pickles the module tree (each module as a dict of its attributes,
    each tensor as a reference to a raw little-endian record <root>/data/<key>); <root>/code/ holds the
    TorchScript source we ignore. torch.load refuses such archives under weights_only=True and torch.jit.load
    compiles their code, so this restricted unpickler accepts only module placeholders, storages and tensors."""
    root = min((n for n in names if n.endswith("/data.pkl")), key=len)[: -len("data.pkl")]
    storages, flat = {}, {}

    class ModuleState:  # stands in for a scripted module: keeps its attribute dict, runs nothing
        def __setstate__(self, state):
            self.state = state

    def rebuild(storage, offset, size, stride, *_):  # the arguments of torch._utils._rebuild_tensor_v2
        return storage.as_strided(size, stride, offset)
    allowed = {("torch._utils", "_rebuild_tensor_v2"): rebuild, ("collections", "OrderedDict"): OrderedDict}
    allowed.update({("torch.jit._pickle", f"build_{t}list"): list for t in ("int", "double", "bool", "tensor")})

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module.startswith("__torch__."):
                return ModuleState
            if module == "torch" and name in _STORAGE_DTYPES:
                return _STORAGE_DTYPES[name]
            if (module, name) in allowed:
                return allowed[module, name]
            raise pickle.UnpicklingError(f"unexpected {module}.{name} in a TorchScript archive")

        def persistent_load(self, pid):  # ("storage", dtype, key, location, numel): a flat 1-d tensor
            _, dtype, key, _, _ = pid
            if key not in storages:
                raw = bytearray(zf.read(f"{root}data/{key}"))
                storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            return storages[key]

    def walk(obj, prefix):  # a module's tensor attributes are its parameters and buffers
        for key, value in obj.state.items():
            if isinstance(value, torch.Tensor):
                flat[prefix + key] = value
            elif isinstance(value, ModuleState):
                walk(value, f"{prefix}{key}.")
    walk(Unpickler(zf.open(f"{root}data.pkl")).load(), "")
    return flat


def read_checkpoint(path):
    """{name: tensor} from a TorchScript archive as OpenAI released them, or from a torch.save'd state dict."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if any(n.endswith("/constants.pkl") for n in names):  # torch's own test for "TorchScript archive"
                try:
                    return read_torchscript(zf, names)
                except Exception as e:
                    raise CLIPError(f"{path}: unreadable TorchScript archive ({type(e).__name__}: {e})") from e
    else:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":  # starts like a zip, but the zip's directory at its end is missing
                raise CLIPError(f"{path} is truncated ({os.path.getsize(path)} bytes, the end of the zip "
                                   "archive is missing): delete it and download it again")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CLIPError(f"{path} is neither a TorchScript archive nor a state dict saved by torch.save "
                           f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]})") from e
    if not isinstance(sd, dict):
        raise CLIPError(f"{path} holds a {type(sd).__name__}, not a state dict of CLIP weights")
    return sd


# ---- ViCLIP's released files (viclip.py): a flat .safetensors file, or a .pth of its training code
def is_safetensors(path):
    """A safetensors file starts with its header's length (8 bytes, little-endian) and then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path)


def is_viclip_file(path):
    """Whether the file at path holds ViCLIP weights (its tensor names), read cheaply: the safetensors header,
    or the names in a torch.save archive's pickle (read as bytes, nothing is unpickled)."""
    try:
        if is_safetensors(path):
            from safetensors import safe_open
            with safe_open(path, "pt") as f:
                return any(k.startswith("vision_encoder.") for k in f.keys())
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
                return bool(pkl) and b"vision_encoder.temporal_positional_embedding" in zf.read(min(pkl, key=len))
    except Exception:  # unreadable: let the loader that gets it say why, in its own words
        return False
    return False


def read_viclip_state_dict(path):
    """{name: tensor} from a flat .safetensors file, or from a .pth holding {'model': state_dict, ...} (as ViCLIP's
    training code saves it) or a plain state dict. torch.load runs with weights_only=True, never otherwise."""
    if is_safetensors(path):
        from safetensors.torch import load_file  # a well-kept reader of the format (see requirements.txt)
        try:
            return load_file(path)
        except Exception as e:
            raise CLIPError(f"{path}: unreadable safetensors file ({type(e).__name__}: {e})") from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):  # pickled Python objects, not just tensors
            raise CLIPError(
                f"{path} holds pickled training objects besides the weights, which safe loading refuses; if you "
                f"trust the file, save its weights alone once: python -c \"import torch; torch.save(torch.load("
                f"'{path}', weights_only=False)['model'], 'viclip-weights.pth')\", then load viclip-weights.pth") from e
        raise CLIPError(f"{path} is neither a .safetensors file nor a state dict saved by torch.save "
                        f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]})") from e
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]  # ViCLIP's training checkpoints: {'model': state_dict, ...}
    if not isinstance(sd, dict):
        raise CLIPError(f"{path} holds a {type(sd).__name__}, not a state dict of ViCLIP weights")
    return sd
