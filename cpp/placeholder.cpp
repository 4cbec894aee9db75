// Replaced by the engine sources; keeps the static library non-empty.
namespace ibnedge { int placeholder() { return 0; } }
