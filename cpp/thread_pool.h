// A fixed set of worker threads fed from one queue; the engine's only long-lived state.
// Each worker owns a Workspace for its whole life (created when it starts, destroyed when
// it ends) and hands it to every task it runs.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>

namespace ibnedge {

struct Workspace;

class ThreadPool {
public:
    // Throws std::runtime_error (having joined the workers it started) when the system
    // refuses a thread.
    explicit ThreadPool(int workers);
    // In the process that started the workers: finishes queued tasks, then joins them. In a
    // child forked after that, the workers do not exist: their state is abandoned untouched.
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    using Task = std::function<void(Workspace&)>;
    void submit(Task task);
    int size() const { return workers_; }
    // False in a child forked after the pool started: fork() copies only the calling thread,
    // so nothing would ever run what this pool is given there.
    bool started_in_this_process() const;

private:
    struct Shared;  // the queue and the workers' std::threads, shared with the workers
    static void work(Shared* shared);
    void stop();  // finishes the queued tasks, then joins every worker started

    int workers_;
    pid_t owner_;  // the process that started the workers
    std::unique_ptr<Shared> shared_;
};

}  // namespace ibnedge
