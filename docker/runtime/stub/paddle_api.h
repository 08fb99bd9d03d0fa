// A stand-in for Paddle Lite's paddle_api.h (light API subset ppocr_runner uses), for testing
// the runner's pre/post-processing and output contract on the build machine, without Lite.
// NOT the real API: det returns a fixed text region, rec a fixed CTC sequence.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace paddle {
namespace lite_api {
using shape_t = std::vector<int64_t>;
enum class PowerMode { LITE_POWER_HIGH = 0, LITE_POWER_LOW = 1, LITE_POWER_FULL = 2, LITE_POWER_NO_BIND = 3, LITE_POWER_RAND_HIGH = 4, LITE_POWER_RAND_LOW = 5 };

struct TensorData {
  shape_t dims;
  std::vector<float> buf;
};

// A handle on a predictor's tensor, as Lite's Tensor is.
struct Tensor {
  explicit Tensor(std::shared_ptr<TensorData> t) : d(std::move(t)) {}
  std::shared_ptr<TensorData> d;
  void Resize(const shape_t& s) {
    d->dims = s;
    size_t n = 1;
    for (auto x : s) n *= static_cast<size_t>(x);
    d->buf.assign(n, 0.f);
  }
  template <typename T> T* mutable_data() { return d->buf.data(); }
  template <typename T> const T* data() const { return d->buf.data(); }
  shape_t shape() const { return d->dims; }
};

class MobileConfig {
 public:
  void set_model_from_file(const std::string& f) { model = f; }
  void set_threads(int t) { threads = t; }
  void set_power_mode(PowerMode m) { mode = m; }
  std::string model;
  int threads = 1;
  PowerMode mode = PowerMode::LITE_POWER_HIGH;
};

class PaddlePredictor {
 public:
  explicit PaddlePredictor(bool det) : det_(det), in_(std::make_shared<TensorData>()), out_(std::make_shared<TensorData>()) {}
  std::unique_ptr<Tensor> GetInput(int) { return std::unique_ptr<Tensor>(new Tensor(in_)); }
  std::unique_ptr<const Tensor> GetOutput(int) const { return std::unique_ptr<const Tensor>(new Tensor(out_)); }
  void Run() {
    Tensor out(out_);
    int64_t h = in_->dims[2], w = in_->dims[3];
    if (det_) {  // probability 0.9 over rows [h/4, h/2), columns [w/4, 3w/4)
      out.Resize({1, 1, h, w});
      for (int64_t y = h / 4; y < h / 2; ++y)
        for (int64_t x = w / 4; x < 3 * w / 4; ++x) out_->buf[y * w + x] = 0.9f;
    } else {  // CTC steps: 1 1 0 2 0 3, then blanks -> dictionary entries 0, 1, 2
      int64_t t = w / 8, c = 10;
      out.Resize({1, t, c});
      const int seq[] = {1, 1, 0, 2, 0, 3};
      for (int64_t i = 0; i < t; ++i) out_->buf[i * c + (i < 6 ? seq[i] : 0)] = 0.95f;
    }
  }

 private:
  bool det_;
  std::shared_ptr<TensorData> in_, out_;
};

template <typename ConfigT>
std::shared_ptr<PaddlePredictor> CreatePaddlePredictor(const ConfigT& c) {
  return std::make_shared<PaddlePredictor>(c.model.find("det") != std::string::npos);
}
}  // namespace lite_api
}  // namespace paddle
