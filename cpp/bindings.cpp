// The only file that knows about Python: a thin pybind11 layer over the C++ engine.
// Arguments and buffers are checked with the GIL held; the batch runs with it released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine.h"
#include "jpeg_decoder.h"
#include "resize_kernel.h"
#include "resize_plan.h"

namespace py = pybind11;

namespace {

// An export of a Python buffer (PyObject_GetBuffer). While it is held the exporter stays
// alive and its memory in place, even when another thread drops every other reference to
// it while the batch runs with the GIL released. Released (with the GIL held) when it goes.
class BufferLease {
public:
    BufferLease(const py::handle& obj, int flags) {
        if (PyObject_GetBuffer(obj.ptr(), &view_, flags) != 0) throw py::error_already_set();
    }
    ~BufferLease() { PyBuffer_Release(&view_); }
    BufferLease(const BufferLease&) = delete;
    BufferLease& operator=(const BufferLease&) = delete;
    const Py_buffer& view() const { return view_; }

private:
    Py_buffer view_{};
};

using Leases = std::vector<std::unique_ptr<BufferLease>>;

// Exports `obj`'s buffer for as long as `leases` lives.
const Py_buffer& lease(const py::handle& obj, int flags, Leases* leases) {
    std::unique_ptr<BufferLease> held(new BufferLease(obj, flags));
    leases->push_back(std::move(held));
    return leases->back()->view();
}

std::string item_label(size_t i) { return "item " + std::to_string(i); }

ibnedge::PixelView pixel_view(const py::handle& obj, size_t i, Leases* leases) {
    const std::string layout = ": pixel arrays must be numpy (H, W, 3) or (H, W, 4) uint8 arrays";
    // The dtype by equivalence (numpy's ==), not identity: uint8 carrying metadata is uint8.
    if (!py::array_t<uint8_t>::check_(obj)) throw std::invalid_argument(item_label(i) + layout);
    const Py_buffer& b = lease(obj, PyBUF_STRIDED_RO, leases);
    if (b.ndim != 3 || b.shape[2] < 3 || b.shape[2] > 4) throw std::invalid_argument(item_label(i) + layout);
    if (b.shape[0] > ibnedge::kMaxImageSide || b.shape[1] > ibnedge::kMaxImageSide)
        throw std::invalid_argument(item_label(i) + ": pixel array sides over " +
                                    std::to_string(ibnedge::kMaxImageSide) + " are not supported");
    if (b.strides[2] != 1)
        throw std::invalid_argument(item_label(i) + ": pixel array channels must be adjacent bytes");
    ibnedge::PixelView v;
    v.data = static_cast<const uint8_t*>(b.buf);
    v.height = int(b.shape[0]);
    v.width = int(b.shape[1]);
    v.channels = int(b.shape[2]);
    v.row_stride = b.strides[0];
    v.pixel_stride = b.strides[1];
    return v;
}

std::string path_bytes(const py::handle& obj, size_t i) {
    if (PyBytes_Check(obj.ptr())) return std::string(PyBytes_AS_STRING(obj.ptr()), size_t(PyBytes_GET_SIZE(obj.ptr())));
    if (!PyUnicode_Check(obj.ptr())) throw std::invalid_argument(item_label(i) + ": a path must be str or bytes");
    py::object encoded = py::reinterpret_steal<py::object>(PyUnicode_EncodeFSDefault(obj.ptr()));
    if (!encoded) throw py::error_already_set();
    return std::string(PyBytes_AS_STRING(encoded.ptr()), size_t(PyBytes_GET_SIZE(encoded.ptr())));
}

class PyEngine {
public:
    explicit PyEngine(int threads) : engine_(threads) {}
    int threads() const { return engine_.threads(); }

    py::list run(const py::list& items, const std::string& types, const py::array& out, const std::string& semantics,
                 int resize, std::pair<int, int> crop, std::vector<double> mean, std::vector<double> std,
                 bool exif_orientation, bool accept_damaged, uint64_t max_pixels, bool restrict_window) {
        ibnedge::TensorSpec spec;
        spec.semantics = ibnedge::parse_semantics(semantics);
        spec.resize = resize;
        spec.crop_height = crop.first;
        spec.crop_width = crop.second;
        if (mean.size() != 3 || std.size() != 3) throw std::invalid_argument("mean and std need 3 values each");
        for (int c = 0; c < 3; ++c) {
            spec.mean[c] = mean[c];
            spec.std[c] = std[c];
        }
        spec.validate();
        ibnedge::DecodeOptions options;
        options.exif_orientation = exif_orientation;
        options.accept_damaged = accept_damaged;
        options.max_pixels = max_pixels;
        options.restrict_window = restrict_window;

        const size_t n = items.size();
        if (types.size() != n) throw std::invalid_argument("types must hold one letter per item");

        Leases leases;  // every buffer the batch reads or writes, held until the end
        float* dst = out_buffer(out, n, spec, &leases);
        std::vector<ibnedge::ImageSource> sources(n);
        for (size_t i = 0; i < n; ++i) {
            const py::handle obj = items[i];
            switch (types[i]) {
                case 'b': {
                    const Py_buffer& b = lease(obj, PyBUF_SIMPLE, &leases);
                    sources[i] = ibnedge::ImageSource::encoded(static_cast<const uint8_t*>(b.buf), size_t(b.len));
                    break;
                }
                case 'p':
                    sources[i] = ibnedge::ImageSource::file(path_bytes(obj, i));
                    break;
                case 'a':
                    sources[i] = ibnedge::ImageSource::decoded(pixel_view(obj, i, &leases));
                    break;
                case 'n':
                    break;  // ImageSource::Type::kNone
                default:
                    throw std::invalid_argument("unknown item type letter '" + std::string(1, types[i]) +
                                                "' (b: encoded bytes, p: path, a: pixel array, n: skip)");
            }
        }

        std::vector<ibnedge::ItemStatus> statuses;
        {
            py::gil_scoped_release release;
            engine_.run(sources, spec, options, dst, &statuses);
        }
        py::list result;
        for (const ibnedge::ItemStatus& s : statuses) {
            if (s.ok()) {
                result.append(py::none());
            } else {
                result.append(py::make_tuple(ibnedge::error_kind_name(s.kind), s.message));
            }
        }
        return result;
    }

private:
    // Where the batch writes: `out` checked (the dtype by equivalence, as for pixel arrays)
    // and exported for the whole run.
    static float* out_buffer(const py::array& out, size_t n, const ibnedge::TensorSpec& spec, Leases* leases) {
        const bool ok = py::array_t<float>::check_(out) && out.ndim() == 4 && size_t(out.shape(0)) == n &&
                        out.shape(1) == 3 && out.shape(2) == spec.crop_height && out.shape(3) == spec.crop_width &&
                        (out.flags() & py::array::c_style) && out.writeable();
        if (ok) {
            const Py_buffer& b = lease(out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, leases);
            if (reinterpret_cast<uintptr_t>(b.buf) % alignof(float) == 0) return static_cast<float*>(b.buf);
        }
        throw std::invalid_argument("out must be a writeable, aligned, C-contiguous float32 array of shape (" +
                                    std::to_string(n) + ", 3, " + std::to_string(spec.crop_height) + ", " +
                                    std::to_string(spec.crop_width) + ")");
    }

    ibnedge::Engine engine_;
};

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "ibnedge native engine: JPEG bytes/files and pixel arrays -> normalised float32 CHW batches";
    m.attr("__version__") = IBNEDGE_VERSION;
    m.attr("MAX_IMAGE_SIDE") = ibnedge::kMaxImageSide;

    py::class_<PyEngine>(m, "Engine", "A persistent thread pool that preprocesses batches.")
        .def(py::init<int>(), py::arg("threads") = 0,
             "threads: total parallelism of a run (0: one per hardware thread)")
        .def_property_readonly("threads", &PyEngine::threads)
        .def("run", &PyEngine::run, py::arg("items"), py::arg("types"), py::arg("out"), py::kw_only(),
             py::arg("semantics"), py::arg("resize"), py::arg("crop"), py::arg("mean"), py::arg("std"),
             py::arg("exif_orientation") = false, py::arg("accept_damaged") = false,
             py::arg("max_pixels") = uint64_t(178956970), py::arg("restrict_window") = true,
             "Preprocess a batch into `out`; returns None or (kind, message) per item.");

    m.def("simd_path", [] { return std::string(ibnedge::kernel_simd_name(ibnedge::kernel_simd())); },
          "The vector instruction set the resize kernel uses on this CPU: 'avx2', 'neon' or 'scalar'.");
    m.def("jpeg_library", [] {
              const ibnedge::JpegLibraryInfo info = ibnedge::jpeg_library_info();
              py::dict d;
              d["api_version"] = info.api_version;
              d["turbo_version"] = info.turbo_version;
              d["partial_decode"] = true;  // the build requires jpeg_crop_scanline / jpeg_skip_scanlines
              return d;
          },
          "The libjpeg the engine was built against: api_version (JPEG_LIB_VERSION), turbo_version, partial_decode.");
}
