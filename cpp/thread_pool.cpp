#include "thread_pool.h"

#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "workspace.h"

namespace ibnedge {

struct ThreadPool::Shared {
    std::mutex mutex;
    std::condition_variable wake;
    std::deque<Task> queue;
    bool stopping = false;
    std::vector<std::thread> threads;
};

ThreadPool::ThreadPool(int workers)
    : workers_(workers > 0 ? workers : 0), owner_(::getpid()), shared_(new Shared) {
    shared_->threads.reserve(size_t(workers_));
    Shared* shared = shared_.get();
    for (int i = 0; i < workers_; ++i) {
        try {
            shared_->threads.emplace_back([shared] { work(shared); });
        } catch (const std::system_error& e) {
            // The OS refused a thread (a process or address-space limit). The ones started
            // must be joined: a joinable std::thread destroyed with the pool would abort.
            stop();
            throw std::runtime_error("cannot start the engine's worker thread " + std::to_string(i + 1) + " of " +
                                     std::to_string(workers_) + " (" + e.what() +
                                     "): the system allows fewer threads; ask for fewer threads");
        }
    }
}

ThreadPool::~ThreadPool() {
    if (!started_in_this_process()) {
        // A forked child's copy: joining would wait forever for threads that are not there,
        // and the mutex and condition variable may be copies taken mid-use (destroying a
        // condition variable with waiters blocks too). Leak them; the memory is the
        // parent's copy-on-write pages.
        shared_.release();
        return;
    }
    stop();
}

void ThreadPool::stop() {
    {
        std::lock_guard<std::mutex> lock(shared_->mutex);
        shared_->stopping = true;
    }
    shared_->wake.notify_all();
    for (std::thread& t : shared_->threads) t.join();
}

bool ThreadPool::started_in_this_process() const { return ::getpid() == owner_; }

void ThreadPool::submit(Task task) {
    {
        std::lock_guard<std::mutex> lock(shared_->mutex);
        shared_->queue.push_back(std::move(task));
    }
    shared_->wake.notify_one();
}

void ThreadPool::work(Shared* shared) {
    Workspace workspace;  // this worker's, until it ends
    for (;;) {
        Task task;
        {
            std::unique_lock<std::mutex> lock(shared->mutex);
            shared->wake.wait(lock, [shared] { return shared->stopping || !shared->queue.empty(); });
            if (shared->queue.empty()) return;  // stopping, nothing left
            task = std::move(shared->queue.front());
            shared->queue.pop_front();
        }
        task(workspace);
    }
}

}  // namespace ibnedge
