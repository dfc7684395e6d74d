/* SPDX-License-Identifier: MIT */
// boost::context::fiber resume ping-pong: the raw cost of one switch, the
// figure weft__ctx_swap is compared against.
#include <boost/context/fiber.hpp>
#include <chrono>
#include <cstdio>

namespace ctx = boost::context;

int main()
{
    const long n = 20000000;
    ctx::fiber f{[](ctx::fiber &&caller) {
        for (;;)
            caller = std::move(caller).resume();
        return std::move(caller);
    }};
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; i++)
        f = std::move(f).resume();
    auto t1 = std::chrono::steady_clock::now();
    double ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / (2.0 * n);
    std::printf("boost::context::fiber resume: %.1f ns/switch\n", ns);
    return 0;
}
