#include "workspace.h"

namespace ibnedge {
namespace {

template <typename T>
void free_if_large(std::vector<T>* buffer) {
    if (buffer->capacity() * sizeof(T) > Workspace::kKeptBytes) std::vector<T>().swap(*buffer);
}

}  // namespace

void Workspace::trim() {
    free_if_large(&file_bytes);
    free_if_large(&strip);
    free_if_large(&window);
    free_if_large(&window_rows);
    free_if_large(&resampler.ring);
    free_if_large(&resampler.source_row);
}

}  // namespace ibnedge
