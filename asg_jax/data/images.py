"""The one radiograph decoder of the project: the tfds builders (`builders/chest_builder.
read_image`), `inference.Pretrained.preprocess_images` (file paths and arrays) and the
visualize CLI (`figures/examples.read_image`) all read images through it.

    pixels, (height, width) = images.read_grey(path, target_size=256)   # uint8 [h, w]
    pixels = images.load(path_or_array_or_pil)                          # uint8 [H, W]

Files: PNG / JPEG / TIFF / BMP ... (any PIL mode: 1, L, P, LA, RGB, RGBA, CMYK, YCbCr,
I;16*, I, F; EXIF orientation applied) and DICOM (`.dcm` / `.dicom`, or any file with the
DICM preamble: modality LUT, VOI LUT or window when present else min-max, MONOCHROME1
inverted, the first frame of a multi-frame file). Integer / float images with more than 8
bits are windowed min-max to 8 bits; colour is reduced to luminance (ITU-R 601, PIL's
`convert("L")`); an alpha channel is dropped. With `target_size`, JPEGs are decoded at a
reduced scale no smaller than it (PIL draft mode) and other images are box-reduced right
after decoding when larger than LARGE_PIXELS (integer factor, the result still >=
target_size on its longest side), so a 16-bit 10000² PNG is never windowed in float at full
size. PIL's decompression-bomb limit
is lifted to `MAX_PIXELS` (1 gigapixel) for these reads only.

Errors: `ImageReadError(reason, path, detail)` with reason `missing_image` (no such file) or
`corrupt_image` and `kind` one of KINDS (empty file, not an image, truncated, decode error).
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps

MISSING_IMAGE, CORRUPT_IMAGE = "missing_image", "corrupt_image"
EMPTY_FILE, NOT_AN_IMAGE, TRUNCATED, DECODE_ERROR = ("empty_file", "not_an_image",
                                                     "truncated", "decode_error")
KINDS = (EMPTY_FILE, NOT_AN_IMAGE, TRUNCATED, DECODE_ERROR)
MAX_PIXELS = 1 << 30
LARGE_PIXELS = 6000 * 6000   # above: box-reduced right after decoding (target_size given)
DICOM_SUFFIXES = (".dcm", ".dicom")


class ImageReadError(ValueError):
  """An image that cannot be read: `reason` (missing_image / corrupt_image), `kind` (one of
  KINDS, or "missing"), the path and a detail naming the cause."""

  def __init__(self, reason: str, path: str, detail: str, kind: str = ""):
    super().__init__(f"{reason}: {path} ({detail})")
    self.reason, self.path, self.detail = reason, str(path), detail
    self.kind = kind or ("missing" if reason == MISSING_IMAGE else DECODE_ERROR)


def to_uint8(arr: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
  """Float/int image -> uint8 by linear windowing (min-max when `window` is None)."""
  arr = np.asarray(arr)
  if window is None:
    lo, hi = float(np.min(arr)), float(np.max(arr))
  else:
    lo, hi = window
  if not (math.isfinite(lo) and math.isfinite(hi)):
    raise ValueError("image has non-finite pixel values")
  if hi <= lo:
    return np.zeros(arr.shape, np.uint8)
  arr = np.asarray(arr, dtype=np.float64)
  return np.clip(np.round((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def reduce_factor(height: int, width: int, target_size: int | None) -> int:
  """The largest integer k with max(h, w) // k >= target_size; 1 without a target or for
  an image of at most LARGE_PIXELS (those are windowed / resized at full size, as before)."""
  if not target_size or height * width <= LARGE_PIXELS:
    return 1
  return max(1, max(height, width) // int(target_size))


def box_reduce(arr: np.ndarray, k: int) -> np.ndarray:
  """[H, W] -> [ceil(H/k), ceil(W/k)] block means (float32), computed a band of rows at a
  time (no full-size float copy); edge blocks average the pixels they have."""
  if k <= 1:
    return arr
  h, w = arr.shape
  ho, wo = -(-h // k), -(-w // k)
  out = np.empty((ho, wo), np.float32)
  pad_w = wo * k - w
  for r in range(ho):
    band = arr[r * k:(r + 1) * k].astype(np.float32)
    sums = np.add.reduceat(band.sum(0), np.arange(0, w, k))
    counts = np.full(wo, float(k))
    if pad_w:
      counts[-1] = k - pad_w
    out[r] = sums / (counts * band.shape[0])
  return out


@contextlib.contextmanager
def _bomb_limit():
  old = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = MAX_PIXELS
  try:
    yield
  finally:
    Image.MAX_IMAGE_PIXELS = old


def _read_dicom(path: str, target_size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
  """DICOM -> (uint8 [h, w], (Rows, Columns)): modality LUT, VOI LUT / window (else
  min-max), MONOCHROME1 inverted."""
  import pydicom  # pylint: disable=import-outside-toplevel
  from pydicom.pixels import apply_modality_lut, apply_voi_lut  # pylint: disable=import-outside-toplevel
  ds = pydicom.dcmread(path)
  arr = ds.pixel_array
  if arr.ndim >= 3 and int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
    arr = arr[0]   # multi-frame: the first frame
  photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
  original = (int(arr.shape[0]), int(arr.shape[1]))
  if arr.ndim == 3:   # colour DICOM (rare for CXR): luminance
    arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return to_uint8(box_reduce(arr, reduce_factor(*original, target_size))), original
  arr = apply_modality_lut(arr, ds)
  if ("WindowCenter" in ds and "WindowWidth" in ds) or "VOILUTSequence" in ds:
    arr = apply_voi_lut(arr, ds)
  out = to_uint8(box_reduce(arr, reduce_factor(*original, target_size)))
  if photometric == "MONOCHROME1":
    out = 255 - out
  return out, original


def _grey_of(im: Image.Image) -> np.ndarray:
  """A loaded PIL image of any mode -> uint8 [H, W] (module docstring)."""
  if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
    return np.asarray(im)
  if im.mode == "LA":
    return np.asarray(im.getchannel("L"), dtype=np.uint8)
  if im.mode in ("CMYK", "La", "PA", "RGBA", "RGBa"):
    im = im.convert("RGB")                              # alpha dropped, CMYK as PIL maps it
  return np.asarray(im.convert("L"), dtype=np.uint8)


def _read_pil(path: str, target_size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
  with _bomb_limit(), Image.open(path) as im:
    width, height = im.size
    orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    if im.format == "JPEG" and target_size:
      im.draft("L", (target_size, target_size))
    im.load()
    im = ImageOps.exif_transpose(im) if orientation not in (None, 1) else im
    if orientation in (5, 6, 7, 8):
      width, height = height, width
    arr = _grey_of(im)
  if arr.ndim != 2 or arr.size == 0:
    raise ValueError(f"unexpected decoded shape {arr.shape}")
  k = reduce_factor(*arr.shape, target_size)
  if arr.dtype != np.uint8:
    arr = to_uint8(box_reduce(arr, k))
  elif k > 1:
    arr = np.clip(np.round(box_reduce(arr, k)), 0, 255).astype(np.uint8)
  return arr, (int(height), int(width))


def _kind(path: str, error: Exception) -> str:
  from PIL import UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  if os.path.getsize(path) == 0:
    return EMPTY_FILE
  if isinstance(error, UnidentifiedImageError):
    return NOT_AN_IMAGE
  text = str(error).lower()
  if "truncated" in text or "premature end" in text or "ended prematurely" in text:
    return TRUNCATED
  return DECODE_ERROR


def is_dicom(path: str) -> bool:
  """`.dcm` / `.dicom`, or the DICM magic at byte 128."""
  if path.lower().endswith(DICOM_SUFFIXES):
    return True
  with open(path, "rb") as f:
    head = f.read(132)
  return head[128:132] == b"DICM"


def read_grey(path: str, target_size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
  """Read a radiograph file as grey uint8 (module docstring).

  Args:
    path: the image file.
    target_size: if given, decode at a reduced size whose longest side is still >= it.
  Returns:
    (pixels uint8 [h, w], (H, W) = the ORIGINAL full-resolution height and width, after
    the EXIF orientation).
  Raises:
    ImageReadError (missing_image / corrupt_image, naming the file and the kind).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ImageReadError(MISSING_IMAGE, path, "file not found", "missing")
  try:
    if os.path.getsize(path) == 0:
      raise ValueError("empty file (0 bytes)")
    if is_dicom(path):
      return _read_dicom(path, target_size)
    return _read_pil(path, target_size)
  except Exception as e:  # pylint: disable=broad-except
    kind = _kind(path, e)
    raise ImageReadError(CORRUPT_IMAGE, path, f"{kind}: {type(e).__name__}: {e}", kind) from e


def grey_array(image: Any, where: str = "image") -> np.ndarray:
  """An array [H, W], [H, W, 1] (grey), [H, W, 2] (grey + alpha), [H, W, 3] (RGB) or
  [H, W, 4] (RGBA) of uint8, uint16 / int / float (windowed min-max to 8 bits) or bool ->
  uint8 [H, W]. ValueError naming `where` otherwise."""
  a = np.asarray(image)
  if a.ndim == 3 and a.shape[-1] in (2, 4):
    a = a[..., :-1]                                    # alpha dropped
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim == 3 and a.shape[-1] == 3:
    if a.dtype == np.uint8:
      return np.asarray(Image.fromarray(np.ascontiguousarray(a), "RGB").convert("L"))
    a = a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  if a.ndim != 2 or a.size == 0:
    raise ValueError(f"{where}: expected [H, W], [H, W, 1], [H, W, 2], [H, W, 3] or "
                     f"[H, W, 4] pixels, got shape {np.asarray(image).shape}")
  if a.dtype == np.bool_:
    return a.astype(np.uint8) * 255
  if a.dtype == np.uint8:
    return a
  if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
    raise ValueError(f"{where}: pixels of dtype {a.dtype} are not numbers")
  return to_uint8(a)


def load(image: Any, where: str = "image", target_size: int | None = None) -> np.ndarray:
  """A file path (str / PathLike), PIL image or array -> grey uint8 [H, W] (module
  docstring). Raises FileNotFoundError / ValueError naming `where` and the file."""
  if isinstance(image, (str, os.PathLike)):
    try:
      return read_grey(os.fspath(image), target_size)[0]
    except ImageReadError as e:
      if e.reason == MISSING_IMAGE:
        raise FileNotFoundError(f"{where}: {e.path} not found") from e
      raise ValueError(f"{where}: cannot read {e.path}: {e.detail}") from e
  if isinstance(image, Image.Image):
    image.load()
    arr = _grey_of(ImageOps.exif_transpose(image))
    return arr if arr.dtype == np.uint8 else to_uint8(arr)
  return grey_array(image, where)
