// ppocr_runner: PP-OCR with Paddle Lite's light API (det -> crop -> rec), pre- and post-processing
// as PaddleOCR's Python code does them, so the device reads what the host pipeline reads.
//
// Run from an installed bundle (cwd = the bundle, LD_LIBRARY_PATH=runtime/lib):
//   runtime/bin/ppocr_runner --config config.json --image test/image.jpg
//       [--threads 4] [--power-mode LITE_POWER_HIGH] [--warmup 2] [--repeats 10]
//   runtime/bin/ppocr_runner --config config.json --batch list.tsv --out DIR [--threads N] [--power-mode M]
// config.json is written by toolkit/stages/bundle.py (runtime_config).
//
// Single image: prints the lines and timings, then one JSON object as the last stdout line:
//   {"lines":[{"text":..,"score":..,"box":[[x,y]x4]}], "timings_ms":{"det":..,"rec":..,"total":..},
//    "threads":N, "power_mode":"..", "warmup":W, "repeats":R, "lite_version":".."}
// Batch (verification): list.tsv has one `KIND<TAB>ID<TAB>IMAGE` per line, KIND one of
//   det  the det model on the image: DIR/ID.prob.npy (float32 probability map, the model's
//        input size) and the DBPostProcess boxes and scores
//   rec  the rec model on the image (a line crop): text and score
//   ocr  the whole pipeline: det, box filter and order, crop, rec: the lines
// and each result is one JSON line of DIR/results.jsonl; the last stdout line sums it up.
// Exit 0 on success; 2 with a message on stderr otherwise (batch: after every item ran).
//
// Which PaddleOCR code each step follows (ppocr 2.10, as the toolkit's host code uses it):
//   det_resize        DetResizeForTest (limit_type max/min), cv2.resize INTER_LINEAR, NormalizeImage
//   db_boxes          DBPostProcess.boxes_from_bitmap: findContours, get_mini_boxes, box_score_fast
//                     (mean inside the box polygon), unclip (shapely area/length, pyclipper offset)
//   text_boxes        TextDetector.filter_tag_det_res + predict_system.sorted_boxes
//   crop              utility.get_rotate_crop_image: warpPerspective INTER_CUBIC, BORDER_REPLICATE
//   rec_input         resize_norm_img at height 48 keeping the aspect, padded as toolkit/tasks/rec.py
//                     pads (config rec.width_multiple, max_width; else as TextRecognizer), CTCLabelDecode
// Arithmetic is done in the precision numpy does it in (float32 where the arrays are float32).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <nlohmann/json.hpp>

#include "clipper.hpp"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#include "stb_image.h"

#include "paddle_api.h"

using json = nlohmann::json;
using paddle::lite_api::CreatePaddlePredictor;
using paddle::lite_api::MobileConfig;
using paddle::lite_api::PaddlePredictor;
using paddle::lite_api::PowerMode;
using Quad = std::array<cv::Point2f, 4>;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Decoded as 8-bit BGR, the layout cv2.imread gives the host pipeline.
cv::Mat load_image(const std::string& path) {
  int w = 0, h = 0, n = 0;
  unsigned char* raw = stbi_load(path.c_str(), &w, &h, &n, 3);
  if (!raw) throw std::runtime_error("cannot decode image " + path + ": " + stbi_failure_reason());
  cv::Mat rgb(h, w, CV_8UC3, raw), bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  stbi_image_free(raw);
  return bgr;
}

// A float32 C-order .npy file (numpy.load reads it).
void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  uint16_t len = static_cast<uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.put(static_cast<char>(len & 0xff));
  f.put(static_cast<char>(len >> 8));
  f << header;
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(float)));
  if (!f) throw std::runtime_error("cannot write " + path);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

template <typename T>
T get(const json& section, const char* key, T dflt) {
  auto it = section.find(key);
  return it == section.end() || it->is_null() ? dflt : it->get<T>();
}

// ------------------------------------------------------------------ DBPostProcess
struct MiniBox {
  Quad box;
  float sside;
};

// get_mini_boxes: cv2.minAreaRect + cv2.boxPoints, corners ordered as PaddleOCR orders them.
template <typename P>
MiniBox mini_box(const std::vector<P>& pts) {
  cv::RotatedRect r = cv::minAreaRect(pts);
  cv::Point2f p[4];
  r.points(p);
  std::vector<cv::Point2f> s(p, p + 4);
  std::stable_sort(s.begin(), s.end(), [](const cv::Point2f& a, const cv::Point2f& b) { return a.x < b.x; });
  int i1 = s[1].y > s[0].y ? 0 : 1, i4 = s[1].y > s[0].y ? 1 : 0;
  int i2 = s[3].y > s[2].y ? 2 : 3, i3 = s[3].y > s[2].y ? 3 : 2;
  return {{s[i1], s[i2], s[i3], s[i4]}, std::min(r.size.width, r.size.height)};
}

// box_score_fast: the mean probability inside the box polygon (fillPoly mask over its bounding rect).
double box_score_fast(const cv::Mat& pred, const Quad& box) {
  float minx = box[0].x, maxx = box[0].x, miny = box[0].y, maxy = box[0].y;
  for (const auto& p : box) {
    minx = std::min(minx, p.x); maxx = std::max(maxx, p.x);
    miny = std::min(miny, p.y); maxy = std::max(maxy, p.y);
  }
  int w = pred.cols, h = pred.rows;
  int xmin = std::min(std::max(static_cast<int>(std::floor(minx)), 0), w - 1), xmax = std::min(std::max(static_cast<int>(std::ceil(maxx)), 0), w - 1);
  int ymin = std::min(std::max(static_cast<int>(std::floor(miny)), 0), h - 1), ymax = std::min(std::max(static_cast<int>(std::ceil(maxy)), 0), h - 1);
  cv::Mat mask = cv::Mat::zeros(ymax - ymin + 1, xmax - xmin + 1, CV_8UC1);
  std::vector<cv::Point> poly;
  for (const auto& p : box)  // float32 minus the offset, then astype(int32): truncation
    poly.emplace_back(static_cast<int>(p.x - static_cast<float>(xmin)), static_cast<int>(p.y - static_cast<float>(ymin)));
  cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{poly}, cv::Scalar(1));
  return cv::mean(pred(cv::Rect(xmin, ymin, xmax - xmin + 1, ymax - ymin + 1)), mask)[0];
}

// box_score_slow: the mean inside the contour itself.
double box_score_slow(const cv::Mat& pred, const std::vector<cv::Point>& contour) {
  int w = pred.cols, h = pred.rows;
  int xmin = w, xmax = 0, ymin = h, ymax = 0;
  for (const auto& p : contour) {
    xmin = std::min(xmin, p.x); xmax = std::max(xmax, p.x);
    ymin = std::min(ymin, p.y); ymax = std::max(ymax, p.y);
  }
  xmin = std::min(std::max(xmin, 0), w - 1); xmax = std::min(std::max(xmax, 0), w - 1);
  ymin = std::min(std::max(ymin, 0), h - 1); ymax = std::min(std::max(ymax, 0), h - 1);
  cv::Mat mask = cv::Mat::zeros(ymax - ymin + 1, xmax - xmin + 1, CV_8UC1);
  std::vector<cv::Point> poly;
  for (const auto& p : contour) poly.emplace_back(p.x - xmin, p.y - ymin);
  cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{poly}, cv::Scalar(1));
  return cv::mean(pred(cv::Rect(xmin, ymin, xmax - xmin + 1, ymax - ymin + 1)), mask)[0];
}

// unclip: distance = area * ratio / perimeter as shapely (GEOS) computes them, then
// pyclipper's offset (JT_ROUND, ET_CLOSEDPOLYGON) of the box truncated to integers.
ClipperLib::Paths unclip(const Quad& box, double ratio) {
  double xs[5], ys[5];
  for (int i = 0; i < 5; ++i) { xs[i] = box[i % 4].x; ys[i] = box[i % 4].y; }
  double sum = 0;  // GEOS Area::ofRingSigned
  for (int i = 1; i < 4; ++i) sum += (xs[i] - xs[0]) * (ys[i - 1] - ys[i + 1]);
  double area = std::fabs(sum / 2.0), length = 0;
  for (int i = 1; i < 5; ++i) {  // GEOS Length::ofLine
    double dx = xs[i] - xs[i - 1], dy = ys[i] - ys[i - 1];
    length += std::sqrt(dx * dx + dy * dy);
  }
  ClipperLib::Path path;
  for (const auto& p : box) path.emplace_back(static_cast<ClipperLib::cInt>(p.x), static_cast<ClipperLib::cInt>(p.y));
  ClipperLib::ClipperOffset offset;
  offset.AddPath(path, ClipperLib::jtRound, ClipperLib::etClosedPolygon);
  ClipperLib::Paths out;
  offset.Execute(out, area * ratio / length);
  return out;
}

// ------------------------------------------------------------------ the pipeline
struct Line {
  std::string text;
  float score;
  std::array<cv::Point, 4> box;
};

struct DetOut {
  cv::Mat prob;                              // the model's output map, input size
  std::vector<std::array<cv::Point, 4>> boxes;  // DBPostProcess, in source-image pixels
  std::vector<double> scores;
  double ms_pre = 0, ms_infer = 0, ms_post = 0;
};

class Ocr {
 public:
  Ocr(const json& cfg, int threads, PowerMode mode) : cfg_(cfg) {
    if (!cfg.contains("det") || !cfg.contains("rec")) throw std::runtime_error("config.json needs both det and rec sections");
    det_ = load(get<std::string>(cfg["det"], "model", "models/det.nb"), threads, mode);
    rec_ = load(get<std::string>(cfg["rec"], "model", "models/rec.nb"), threads, mode);
    std::istringstream lines(read_file(get<std::string>(cfg["rec"], "dict", "dict/ppocr_keys_v1.txt")));
    std::string ln;
    while (std::getline(lines, ln)) {
      if (!ln.empty() && ln.back() == '\r') ln.pop_back();
      dict_.push_back(ln);
    }
    if (get<bool>(cfg["rec"], "use_space_char", true)) dict_.push_back(" ");
  }

  std::string version() const { return det_->GetVersion(); }

  // DetResizeForTest + NormalizeImage, the det model, DBPostProcess.
  DetOut detect(const cv::Mat& img) {
    const json& d = cfg_["det"];
    DetOut out;
    auto t0 = std::chrono::steady_clock::now();
    double limit = get<double>(d, "limit_side_len", 960), ratio = 1.0;
    std::string type = get<std::string>(d, "limit_type", "max");
    int h = img.rows, w = img.cols;
    if (type == "max") ratio = std::max(h, w) > limit ? limit / std::max(h, w) : 1.0;
    else if (type == "min") ratio = std::min(h, w) < limit ? limit / std::min(h, w) : 1.0;
    else throw std::runtime_error("det.limit_type " + type + ": expected max or min");
    int rh = std::max(static_cast<int>(std::nearbyint(h * ratio / 32) * 32), 32);  // Python round(): half to even
    int rw = std::max(static_cast<int>(std::nearbyint(w * ratio / 32) * 32), 32);
    cv::Mat resized;
    cv::resize(img, resized, cv::Size(rw, rh));
    auto in = det_->GetInput(0);
    in->Resize({1, 3, rh, rw});
    normalize(resized, in->mutable_data<float>(), rw, floats(d, "mean", {0.485f, 0.456f, 0.406f}), floats(d, "std", {0.229f, 0.224f, 0.225f}));
    out.ms_pre = ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    det_->Run();
    out.ms_infer = ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    auto o = det_->GetOutput(0);
    auto shape = o->shape();
    if (shape.size() != 4 || shape[1] != 1) throw std::runtime_error("det model output is not [N,1,H,W]");
    cv::Mat(static_cast<int>(shape[2]), static_cast<int>(shape[3]), CV_32FC1, const_cast<float*>(o->data<float>())).copyTo(out.prob);
    db_boxes(out, static_cast<float>(h), static_cast<float>(w));
    out.ms_post = ms_since(t0);
    return out;
  }

  // TextDetector.filter_tag_det_res, then sorted_boxes: the boxes the recogniser reads, in reading order.
  static std::vector<Quad> text_boxes(const DetOut& det, int img_h, int img_w) {
    std::vector<Quad> kept;
    for (const auto& b : det.boxes) {
      Quad q = order_clockwise(b);
      for (auto& p : q) {
        p.x = static_cast<float>(static_cast<int>(std::min(std::max(p.x, 0.f), static_cast<float>(img_w - 1))));
        p.y = static_cast<float>(static_cast<int>(std::min(std::max(p.y, 0.f), static_cast<float>(img_h - 1))));
      }
      if (static_cast<int>(norm(q[0] - q[1])) <= 3 || static_cast<int>(norm(q[0] - q[3])) <= 3) continue;
      kept.push_back(q);
    }
    std::stable_sort(kept.begin(), kept.end(), [](const Quad& a, const Quad& b) {
      return a[0].y < b[0].y || (a[0].y == b[0].y && a[0].x < b[0].x);
    });
    for (int i = 0; i + 1 < static_cast<int>(kept.size()); ++i)
      for (int j = i; j >= 0; --j) {
        if (std::fabs(kept[j + 1][0].y - kept[j][0].y) < 10 && kept[j + 1][0].x < kept[j][0].x) std::swap(kept[j], kept[j + 1]);
        else break;
      }
    return kept;
  }

  // get_rotate_crop_image: the quadrilateral warped upright; tall crops turned 90 degrees counter-clockwise.
  static cv::Mat crop(const cv::Mat& img, const Quad& q) {
    int cw = static_cast<int>(std::max(norm(q[0] - q[1]), norm(q[2] - q[3])));
    int ch = static_cast<int>(std::max(norm(q[0] - q[3]), norm(q[1] - q[2])));
    cv::Point2f src[4] = {q[0], q[1], q[2], q[3]};
    cv::Point2f dst[4] = {{0.f, 0.f}, {static_cast<float>(cw), 0.f}, {static_cast<float>(cw), static_cast<float>(ch)}, {0.f, static_cast<float>(ch)}};
    cv::Mat m = cv::getPerspectiveTransform(src, dst), out;
    cv::warpPerspective(img, out, m, cv::Size(cw, ch), cv::INTER_CUBIC, cv::BORDER_REPLICATE);
    if (out.rows * 1.0 / out.cols >= 1.5) cv::rotate(out, out, cv::ROTATE_90_COUNTERCLOCKWISE);
    return out;
  }

  // resize_norm_img for a batch of one, the rec model, CTCLabelDecode.
  std::pair<std::string, float> recognize(const cv::Mat& img, double* ms_pre = nullptr, double* ms_infer = nullptr) {
    const json& r = cfg_["rec"];
    auto t0 = std::chrono::steady_clock::now();
    std::vector<int> shape = get<std::vector<int>>(r, "image_shape", {3, 48, 320});
    if (shape.size() != 3) throw std::runtime_error("rec.image_shape must be [C, H, W]");
    int ih = shape[1], iw = 0, rw = 0;
    int multiple = get<int>(r, "width_multiple", 0);
    if (multiple > 0) {  // the toolkit's RecTask.widths: no squeezing, padded to a multiple (batches of one width)
      int most = get<int>(r, "max_width", 1 << 30);
      rw = std::max(1, std::min(most, static_cast<int>(std::ceil(static_cast<double>(ih * img.cols) / img.rows))));
      iw = std::max(shape[2], (rw + multiple - 1) / multiple * multiple);
    } else {  // PaddleOCR's TextRecognizer, a batch of one
      double wh = img.cols / static_cast<double>(img.rows);
      iw = static_cast<int>(ih * std::max(shape[2] / static_cast<double>(ih), wh));
      rw = static_cast<int>(std::ceil(ih * wh)) > iw ? iw : static_cast<int>(std::ceil(ih * wh));
    }
    cv::Mat resized;
    cv::resize(img, resized, cv::Size(std::max(rw, 1), ih));
    auto in = rec_->GetInput(0);
    in->Resize({1, 3, ih, iw});
    normalize(resized, in->mutable_data<float>(), iw, floats(r, "mean", {0.5f, 0.5f, 0.5f}), floats(r, "std", {0.5f, 0.5f, 0.5f}));
    if (ms_pre) *ms_pre = ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    rec_->Run();
    if (ms_infer) *ms_infer = ms_since(t0);
    auto o = rec_->GetOutput(0);
    auto oshape = o->shape();
    if (oshape.size() != 3) throw std::runtime_error("rec model output is not [N,T,C]");
    int steps = static_cast<int>(oshape[1]), classes = static_cast<int>(oshape[2]);
    const float* p = o->data<float>();
    std::string text;
    double score = 0;
    int n = 0, prev = -1;
    for (int t = 0; t < steps; ++t) {
      const float* row = p + static_cast<size_t>(t) * classes;
      int best = static_cast<int>(std::max_element(row, row + classes) - row);
      if (best != 0 && best != prev) {  // CTC: 0 is the blank; repeats collapse
        if (best - 1 < static_cast<int>(dict_.size())) text += dict_[best - 1];
        score += row[best];
        ++n;
      }
      prev = best;
    }
    return {text, n ? static_cast<float>(score / n) : 0.f};
  }

  // TextSystem: det -> boxes -> crop -> rec, lines under rec.drop_score dropped.
  std::vector<Line> ocr(const cv::Mat& img, double* ms_det, double* ms_rec) {
    auto t0 = std::chrono::steady_clock::now();
    DetOut det = detect(img);
    auto boxes = text_boxes(det, img.rows, img.cols);
    *ms_det = ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    float drop = get<float>(cfg_["rec"], "drop_score", 0.5f);
    std::vector<Line> lines;
    for (const auto& q : boxes) {
      auto res = recognize(crop(img, q));
      if (res.second < drop) continue;
      Line l{res.first, res.second, {}};
      for (int k = 0; k < 4; ++k) l.box[k] = cv::Point(static_cast<int>(q[k].x), static_cast<int>(q[k].y));
      lines.push_back(l);
    }
    *ms_rec = ms_since(t0);
    return lines;
  }

 private:
  json cfg_;
  std::shared_ptr<PaddlePredictor> det_, rec_;
  std::vector<std::string> dict_;

  static std::shared_ptr<PaddlePredictor> load(const std::string& model, int threads, PowerMode mode) {
    std::ifstream probe(model, std::ios::binary);
    if (!probe) throw std::runtime_error("cannot read model " + model);
    MobileConfig c;
    c.set_model_from_file(model);
    c.set_threads(threads);
    c.set_power_mode(mode);
    auto p = CreatePaddlePredictor<MobileConfig>(c);
    if (!p) throw std::runtime_error("Paddle Lite cannot load " + model);
    return p;
  }

  static std::vector<float> floats(const json& section, const char* key, std::vector<float> dflt) {
    auto v = get<std::vector<float>>(section, key, dflt);
    if (v.size() != 3) throw std::runtime_error(std::string(key) + " must have 3 values");
    return v;
  }

  static float norm(const cv::Point2f& d) { return std::sqrt(d.x * d.x + d.y * d.y); }  // float32, as numpy's norm

  // NCHW float input: (x / 255 - mean) / std per channel of the BGR image, zero padding to out_w.
  static void normalize(const cv::Mat& bgr, float* out, int out_w, const std::vector<float>& mean, const std::vector<float>& stdv) {
    size_t plane = static_cast<size_t>(bgr.rows) * out_w;
    std::fill(out, out + 3 * plane, 0.f);
    for (int y = 0; y < bgr.rows; ++y) {
      const uint8_t* row = bgr.ptr<uint8_t>(y);
      for (int x = 0; x < bgr.cols; ++x)
        for (int c = 0; c < 3; ++c) out[c * plane + static_cast<size_t>(y) * out_w + x] = (row[3 * x + c] / 255.f - mean[c]) / stdv[c];
    }
  }

  // order_points_clockwise: by x+y and y-x, as TextDetector does it.
  static Quad order_clockwise(const std::array<cv::Point, 4>& b) {
    int lo = 0, hi = 0;
    for (int i = 1; i < 4; ++i) {
      if (b[i].x + b[i].y < b[lo].x + b[lo].y) lo = i;
      if (b[i].x + b[i].y > b[hi].x + b[hi].y) hi = i;
    }
    std::vector<cv::Point> rest;
    for (int i = 0; i < 4; ++i)
      if (i != lo && i != hi) rest.push_back(b[i]);
    int dmin = 0, dmax = 0;
    for (int i = 1; i < static_cast<int>(rest.size()); ++i) {
      if (rest[i].y - rest[i].x < rest[dmin].y - rest[dmin].x) dmin = i;
      if (rest[i].y - rest[i].x > rest[dmax].y - rest[dmax].x) dmax = i;
    }
    auto f = [](const cv::Point& p) { return cv::Point2f(static_cast<float>(p.x), static_cast<float>(p.y)); };
    return {f(b[lo]), f(rest[dmin]), f(b[hi]), f(rest[dmax])};
  }

  // DBPostProcess.boxes_from_bitmap (box_type quad).
  void db_boxes(DetOut& out, float dest_h, float dest_w) const {
    const json& d = cfg_["det"];
    float thresh = get<float>(d, "thresh", 0.3f);
    double box_thresh = get<double>(d, "box_thresh", 0.7), unclip_ratio = get<double>(d, "unclip_ratio", 2.0);
    size_t max_cand = get<size_t>(d, "max_candidates", 1000);
    std::string mode = get<std::string>(d, "score_mode", "fast");
    const float min_size = 3;
    cv::Mat bitmap = out.prob > thresh;  // 255 where the probability is above the threshold
    if (get<bool>(d, "use_dilation", false)) cv::dilate(bitmap, bitmap, cv::Mat::ones(2, 2, CV_8UC1));
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(bitmap, contours, cv::RETR_LIST, cv::CHAIN_APPROX_SIMPLE);
    int height = out.prob.rows, width = out.prob.cols;
    for (size_t i = 0; i < std::min(contours.size(), max_cand); ++i) {
      MiniBox mb = mini_box(contours[i]);
      if (mb.sside < min_size) continue;
      double score = mode == "slow" ? box_score_slow(out.prob, contours[i]) : box_score_fast(out.prob, mb.box);
      if (box_thresh > score) continue;
      ClipperLib::Paths grown = unclip(mb.box, unclip_ratio);
      if (grown.size() != 1) continue;
      std::vector<cv::Point> pts;
      for (const auto& p : grown[0]) pts.emplace_back(static_cast<int>(p.X), static_cast<int>(p.Y));
      MiniBox big = mini_box(pts);
      if (big.sside < min_size + 2) continue;
      std::array<cv::Point, 4> box;
      for (int k = 0; k < 4; ++k) {  // float32 arithmetic, np.round (half to even), clip, astype(int32)
        float x = std::nearbyint(big.box[k].x / static_cast<float>(width) * dest_w);
        float y = std::nearbyint(big.box[k].y / static_cast<float>(height) * dest_h);
        box[k] = cv::Point(static_cast<int>(std::min(std::max(x, 0.f), dest_w)), static_cast<int>(std::min(std::max(y, 0.f), dest_h)));
      }
      out.boxes.push_back(box);
      out.scores.push_back(score);
    }
  }
};

PowerMode power_mode(const std::string& s) {
  static const std::map<std::string, PowerMode> m = {
      {"LITE_POWER_HIGH", PowerMode::LITE_POWER_HIGH}, {"LITE_POWER_LOW", PowerMode::LITE_POWER_LOW},
      {"LITE_POWER_FULL", PowerMode::LITE_POWER_FULL}, {"LITE_POWER_NO_BIND", PowerMode::LITE_POWER_NO_BIND},
      {"LITE_POWER_RAND_HIGH", PowerMode::LITE_POWER_RAND_HIGH}, {"LITE_POWER_RAND_LOW", PowerMode::LITE_POWER_RAND_LOW}};
  auto it = m.find(s);
  if (it == m.end()) throw std::runtime_error("--power-mode " + s + ": unknown (LITE_POWER_HIGH, _LOW, _FULL, _NO_BIND, _RAND_HIGH, _RAND_LOW)");
  return it->second;
}

json box_json(const std::array<cv::Point, 4>& b) {
  json out = json::array();
  for (const auto& p : b) out.push_back({p.x, p.y});
  return out;
}

json lines_json(const std::vector<Line>& lines) {
  json out = json::array();
  for (const auto& l : lines) out.push_back({{"text", l.text}, {"score", l.score}, {"box", box_json(l.box)}});
  return out;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

struct Args {
  std::string config = "config.json", image = "test/image.jpg", batch, out, mode;
  int threads = -1, warmup = 1, repeats = 1;
};

// --batch: every line of the list is one item; results go to OUT/results.jsonl.
int run_batch(Ocr& ocr, const Args& a, json summary) {
  std::ifstream list(a.batch);
  if (!list) throw std::runtime_error("cannot read batch list " + a.batch);
  std::ofstream results(a.out + "/results.jsonl");
  if (!results) throw std::runtime_error("cannot write " + a.out + "/results.jsonl (does --out exist?)");
  std::map<std::string, double> total_ms;
  std::map<std::string, int> count;
  int errors = 0, items = 0;
  std::string ln;
  while (std::getline(list, ln)) {
    if (!ln.empty() && ln.back() == '\r') ln.pop_back();
    if (ln.empty() || ln[0] == '#') continue;
    std::istringstream fields(ln);
    std::string kind, id, path;
    std::getline(fields, kind, '\t');
    std::getline(fields, id, '\t');
    std::getline(fields, path);
    json r = {{"id", id}, {"kind", kind}};
    ++items;
    try {
      if (id.empty() || id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != std::string::npos)
        throw std::runtime_error("bad id '" + id + "': letters, digits and ._- only");
      cv::Mat img = load_image(path);
      auto t0 = std::chrono::steady_clock::now();
      if (kind == "det") {
        DetOut d = ocr.detect(img);
        write_npy(a.out + "/" + id + ".prob.npy", d.prob.ptr<float>(), {d.prob.rows, d.prob.cols});
        json boxes = json::array();
        for (const auto& b : d.boxes) boxes.push_back(box_json(b));
        r.update({{"prob", id + ".prob.npy"}, {"shape", {d.prob.rows, d.prob.cols}}, {"boxes", boxes}, {"scores", d.scores},
                  {"ms", {{"pre", d.ms_pre}, {"infer", d.ms_infer}, {"post", d.ms_post}}}});
      } else if (kind == "rec") {
        double pre = 0, infer = 0;
        auto res = ocr.recognize(img, &pre, &infer);
        r.update({{"text", res.first}, {"score", res.second}, {"ms", {{"pre", pre}, {"infer", infer}}}});
      } else if (kind == "ocr") {
        double det_ms = 0, rec_ms = 0;
        auto lines = ocr.ocr(img, &det_ms, &rec_ms);
        r.update({{"lines", lines_json(lines)}, {"ms", {{"det", det_ms}, {"rec", rec_ms}}}});
      } else {
        throw std::runtime_error("unknown kind '" + kind + "' (det, rec or ocr)");
      }
      total_ms[kind] += ms_since(t0);
      ++count[kind];
    } catch (const std::exception& e) {
      r["error"] = e.what();
      ++errors;
      std::fprintf(stderr, "ppocr_runner: %s %s: %s\n", kind.c_str(), id.c_str(), e.what());
    }
    results << dump(r) << "\n";
    results.flush();
  }
  json per = json::object();
  for (const auto& kv : total_ms) per[kv.first] = kv.second / count[kv.first];
  summary["batch"] = {{"items", items}, {"errors", errors}, {"out", a.out}, {"results", "results.jsonl"}, {"mean_ms", per}};
  std::printf("batch: %d items, %d errors, results in %s/results.jsonl\n", items, errors, a.out.c_str());
  std::printf("%s\n", dump(summary).c_str());
  return errors ? 2 : 0;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(s + " needs a value");
      return argv[++i];
    };
    auto number = [&](const std::string& v) {
      try { return std::stoi(v); } catch (const std::exception&) { throw std::runtime_error(s + " " + v + ": not a number"); }
    };
    if (s == "--config") a.config = next();
    else if (s == "--image") a.image = next();
    else if (s == "--batch") a.batch = next();
    else if (s == "--out") a.out = next();
    else if (s == "--threads") a.threads = number(next());
    else if (s == "--power-mode") a.mode = next();
    else if (s == "--warmup") a.warmup = number(next());
    else if (s == "--repeats") a.repeats = number(next());
    else if (s == "--help" || s == "-h") {
      std::printf("usage: ppocr_runner --config config.json (--image IMG [--warmup W] [--repeats R] | --batch LIST.tsv --out DIR)\n"
                  "                    [--threads N] [--power-mode MODE]\n");
      std::exit(0);
    } else throw std::runtime_error("unknown argument " + s);
  }
  if (!a.batch.empty() && a.out.empty()) throw std::runtime_error("--batch needs --out DIR");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a = parse(argc, argv);
    json cfg;
    try {
      cfg = json::parse(read_file(a.config));
    } catch (const json::parse_error& e) {
      throw std::runtime_error(a.config + ": " + e.what());
    }
    if (a.threads < 0) a.threads = get<int>(cfg, "threads", 4);
    if (a.mode.empty()) a.mode = get<std::string>(cfg, "power_mode", "LITE_POWER_HIGH");
    if (a.repeats < 1 || a.warmup < 0 || a.threads < 1) throw std::runtime_error("--threads and --repeats must be >= 1, --warmup >= 0");
    Ocr ocr(cfg, a.threads, power_mode(a.mode));
    json summary = {{"threads", a.threads}, {"power_mode", a.mode}, {"lite_version", ocr.version()}};
    if (!a.batch.empty()) {
      summary.update({{"warmup", 0}, {"repeats", 1}});
      return run_batch(ocr, a, summary);
    }
    cv::Mat img = load_image(a.image);
    double t_det = 0, t_rec = 0;
    std::vector<Line> lines;
    for (int it = 0; it < a.warmup + a.repeats; ++it) {
      double d = 0, r = 0;
      lines = ocr.ocr(img, &d, &r);
      if (it >= a.warmup) { t_det += d; t_rec += r; }
    }
    int n = a.repeats;
    for (const auto& l : lines) std::printf("%s\t%.3f\n", l.text.c_str(), l.score);
    std::printf("det %.2f ms, rec %.2f ms, total %.2f ms (mean of %d, %d threads, %s)\n", t_det / n, t_rec / n, (t_det + t_rec) / n, n,
                a.threads, a.mode.c_str());
    summary.update({{"lines", lines_json(lines)}, {"timings_ms", {{"det", t_det / n}, {"rec", t_rec / n}, {"total", (t_det + t_rec) / n}}},
                    {"warmup", a.warmup}, {"repeats", a.repeats}});
    std::printf("%s\n", dump(summary).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ppocr_runner: error: %s\n", e.what());
    return 2;
  }
}
