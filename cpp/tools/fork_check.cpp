// Fork-safety check (tests/memcheck.sh): children forked while other threads of the parent
// are inside Engine::run (taking the pool, handing items to the workers, using the calling
// thread's workspace) must be able to run batches on the same engine and exit. A child that
// cannot (a lock copied taken, a worker that does not exist waited for) is killed by an
// alarm and counted. A second round forks grandchildren while the child's first run is
// starting its own pool (the longest window).
//
// Usage: fork_check [FORKS]   (default 400 per round; exit status 1 when any child hung)
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "engine.h"
#include "preprocess_types.h"

using namespace ibnedge;

namespace {

constexpr unsigned kChildSeconds = 10;  // far more than a child's batch takes

// A batch of a few tiny pixel arrays: cheap, so the looping thread spends much of its time
// in the engine's bookkeeping (pool, workspace), where a fork is most likely to catch a lock.
struct Batch {
    std::vector<uint8_t> pixels = std::vector<uint8_t>(4 * 4 * 3, 128);
    std::vector<ImageSource> items;
    TensorSpec spec;
    std::vector<float> out;
    Batch() {
        PixelView v;
        v.data = pixels.data();
        v.width = v.height = 4;
        v.channels = 3;
        v.row_stride = 12;
        v.pixel_stride = 3;
        items.assign(3, ImageSource::decoded(v));
        spec.resize = spec.crop_height = spec.crop_width = 4;
        out.resize(items.size() * spec.item_floats());
    }
    bool run(Engine& engine) {
        std::vector<ItemStatus> statuses;
        engine.run(items, spec, DecodeOptions(), out.data(), &statuses);
        for (const ItemStatus& s : statuses)
            if (!s.ok()) return false;
        return true;
    }
};

// Forks `forks` children while `busy` runs batches on `engine` in another thread; each child
// runs a batch on the same engine under an alarm. Returns how many children failed.
int fork_while_running(Engine& engine, int forks, bool grandchildren) {
    Batch batch;
    std::atomic<bool> stop{false};
    std::thread busy([&] {
        while (!stop.load()) batch.run(engine);
    });
    int failed = 0;
    for (int k = 0; k < forks; ++k) {
        const pid_t pid = ::fork();
        if (pid < 0) {
            std::perror("fork_check: fork");
            failed++;
            break;
        }
        if (pid == 0) {
            ::alarm(kChildSeconds);
            Batch mine;
            if (!grandchildren) ::_exit(mine.run(engine) ? 0 : 3);
            // The child's first run starts a pool of its own; fork while it does.
            std::thread first([&] { mine.run(engine); });
            const pid_t grandchild = ::fork();
            if (grandchild == 0) {
                ::alarm(kChildSeconds);
                Batch last;
                ::_exit(last.run(engine) ? 0 : 3);
            }
            first.join();
            int status = 0;
            if (grandchild < 0 || ::waitpid(grandchild, &status, 0) != grandchild) ::_exit(4);
            ::_exit(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 5);
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed++;
            std::fprintf(stderr, "fork_check: child %d %s %d\n", k, WIFSIGNALED(status) ? "killed by signal" : "exited",
                         WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
    }
    stop.store(true);
    busy.join();
    return failed;
}

}  // namespace

int main(int argc, char** argv) {
    const int forks = argc > 1 ? std::atoi(argv[1]) : 400;
    Engine engine(3);
    Batch warm;
    if (!warm.run(engine)) {
        std::fprintf(stderr, "fork_check: the batch fails in the parent\n");
        return 2;
    }
    const int children = fork_while_running(engine, forks, false);
    const int grandchildren = fork_while_running(engine, forks / 4, true);
    std::printf("fork_check: %d forks while running, %d failed; %d forks during a child's pool start, %d failed\n",
                forks, children, forks / 4, grandchildren);
    return children + grandchildren == 0 ? 0 : 1;
}
