// Time for the scheduler, behind an interface so tests run on a fake clock.
//
//   FakeClock clock;          // starts at 1'000'000 ms
//   clock.Advance(5000);      // 5 s later, at once
#ifndef LENSGRID_SERVICE_CLOCK_H_
#define LENSGRID_SERVICE_CLOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace lensgrid::service {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;  // milliseconds since the Unix epoch
};

class RealClock : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

class FakeClock : public Clock {
 public:
  int64_t NowMs() const override { return now_ms_.load(); }
  void Advance(int64_t ms) { now_ms_ += ms; }

 private:
  std::atomic<int64_t> now_ms_{1'000'000};
};

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_CLOCK_H_
