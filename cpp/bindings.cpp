// The only file that knows about Python: thin pybind11 layer over the C++ engine.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
    m.doc() = "ibnedge native engine: JPEG/PNG bytes -> normalised float32 CHW batches";
    m.attr("__version__") = IBNEDGE_VERSION;
}
