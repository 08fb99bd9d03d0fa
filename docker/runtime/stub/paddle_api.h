// A stand-in for Paddle Lite's paddle_api.h (the light-API subset ppocr_runner uses), so the
// runner's own pre/post-processing can be compiled and tested on the build machine without Lite.
// NOT the real API. What the "models" return:
//   det  with PPOCR_STUB_DET_MAPS=DIR: the probability map DIR/det-<k>.npy (float32 [H,W], the
//        k-th det run of the process), which must have the input's H and W: a test feeds maps the
//        host pipeline computed, and a resize that differs from the host's is an error. Without
//        it: probability 0.9 over rows [h/4, h/2), columns [w/4, 3w/4).
//   rec  a fixed CTC sequence (1 1 0 2 0 3, then blanks: dictionary entries 0, 1, 2).
// With PPOCR_STUB_DUMP=DIR every input tensor is written as DIR/{det,rec}-<k>.npy, so a test can
// compare the runner's preprocessing with the host's.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
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

namespace stub {
inline void save_npy(const std::string& path, const TensorData& t) {
  std::string dims;
  for (size_t i = 0; i < t.dims.size(); ++i) dims += std::to_string(t.dims[i]) + (t.dims.size() == 1 || i + 1 < t.dims.size() ? "," : "");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  uint16_t len = static_cast<uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.put(static_cast<char>(len & 0xff));
  f.put(static_cast<char>(len >> 8));
  f << header;
  f.write(reinterpret_cast<const char*>(t.buf.data()), static_cast<std::streamsize>(t.buf.size() * sizeof(float)));
}

// A float32, C-order, version 1 .npy of two dimensions (what numpy.save writes for a float32 [H,W]).
inline std::vector<float> load_npy(const std::string& path, int64_t* h, int64_t* w) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("stub det: cannot read " + path);
  char magic[10];
  f.read(magic, 10);
  uint16_t len = static_cast<uint16_t>(static_cast<unsigned char>(magic[8]) | (static_cast<unsigned char>(magic[9]) << 8));
  std::string header(len, ' ');
  f.read(&header[0], len);
  if (header.find("'<f4'") == std::string::npos || header.find("False") == std::string::npos)
    throw std::runtime_error("stub det: " + path + " is not a float32 C-order array");
  auto open = header.find('(', header.find("shape"));
  std::istringstream dims(header.substr(open + 1));
  char comma;
  if (!(dims >> *h >> comma >> *w)) throw std::runtime_error("stub det: " + path + " is not two-dimensional");
  std::vector<float> out(static_cast<size_t>(*h * *w));
  f.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size() * sizeof(float)));
  if (!f) throw std::runtime_error("stub det: " + path + " is truncated");
  return out;
}
}  // namespace stub

class PaddlePredictor {
 public:
  explicit PaddlePredictor(bool det) : det_(det), in_(std::make_shared<TensorData>()), out_(std::make_shared<TensorData>()) {}
  std::unique_ptr<Tensor> GetInput(int) { return std::unique_ptr<Tensor>(new Tensor(in_)); }
  std::unique_ptr<const Tensor> GetOutput(int) const { return std::unique_ptr<const Tensor>(new Tensor(out_)); }
  std::string GetVersion() const { return "stub"; }
  void Run() {
    const char* dump = std::getenv("PPOCR_STUB_DUMP");
    const std::string name = std::string(det_ ? "det-" : "rec-") + std::to_string(runs_++);
    if (dump) stub::save_npy(std::string(dump) + "/" + name + ".npy", *in_);
    Tensor out(out_);
    int64_t h = in_->dims[2], w = in_->dims[3];
    const char* maps = std::getenv("PPOCR_STUB_DET_MAPS");
    if (det_ && maps) {
      int64_t mh = 0, mw = 0;
      std::vector<float> m = stub::load_npy(std::string(maps) + "/" + name + ".npy", &mh, &mw);
      if (mh != h || mw != w)
        throw std::runtime_error("stub det: map " + name + " is " + std::to_string(mh) + "x" + std::to_string(mw) + ", the input is " +
                                 std::to_string(h) + "x" + std::to_string(w));
      out.Resize({1, 1, h, w});
      out_->buf = m;
    } else if (det_) {
      out.Resize({1, 1, h, w});
      for (int64_t y = h / 4; y < h / 2; ++y)
        for (int64_t x = w / 4; x < 3 * w / 4; ++x) out_->buf[y * w + x] = 0.9f;
    } else {
      int64_t t = w / 8, c = 10;
      out.Resize({1, t, c});
      const int seq[] = {1, 1, 0, 2, 0, 3};
      for (int64_t i = 0; i < t; ++i) out_->buf[i * c + (i < 6 ? seq[i] : 0)] = 0.95f;
    }
  }

 private:
  bool det_;
  int runs_ = 0;
  std::shared_ptr<TensorData> in_, out_;
};

template <typename ConfigT>
std::shared_ptr<PaddlePredictor> CreatePaddlePredictor(const ConfigT& c) {
  return std::make_shared<PaddlePredictor>(c.model.find("det") != std::string::npos);
}
}  // namespace lite_api
}  // namespace paddle
