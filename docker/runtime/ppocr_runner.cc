// ppocr_runner: PP-OCR on one image with Paddle Lite's light API (det -> crop -> rec).
//
// Run from an installed bundle (cwd = the bundle, LD_LIBRARY_PATH=runtime/lib):
//   runtime/bin/ppocr_runner --config config.json --image test/image.jpg
//       --threads 4 --power-mode LITE_POWER_HIGH --warmup 2 --repeats 10
// config.json is written by toolkit/bundle.py (runtime_config): det resize / normalisation /
// DB thresholds, rec input shape and dictionary. Pre- and post-processing follow PaddleOCR's
// (DetResizeForTest, DBPostProcess, get_rotate_crop_image, RecResizeImg, CTCLabelDecode).
// The last stdout line is one JSON object:
//   {"lines":[{"text":..,"score":..,"box":[[x,y]x4]}], "timings_ms":{"det":..,"rec":..,"total":..},
//    "threads":N, "power_mode":"..", "warmup":W, "repeats":R}
// Exit 0 on success; 2 with a message on stderr otherwise.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#include "stb_image.h"

#include "paddle_api.h"

using paddle::lite_api::CreatePaddlePredictor;
using paddle::lite_api::MobileConfig;
using paddle::lite_api::PaddlePredictor;
using paddle::lite_api::PowerMode;

// ------------------------------------------------------------------ a small JSON reader
struct Json {
  enum Type { Null, Bool, Num, Str, Arr, Obj } type = Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::map<std::string, Json> obj;

  const Json& operator[](const std::string& k) const {
    static const Json null;
    auto it = obj.find(k);
    return it == obj.end() ? null : it->second;
  }
  double number(double dflt) const { return type == Num ? num : dflt; }
  std::string string(const std::string& dflt) const { return type == Str ? str : dflt; }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}
  Json parse() {
    Json v = value();
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;
  [[noreturn]] void fail(const char* what) { throw std::runtime_error(std::string("config.json: ") + what + " at byte " + std::to_string(i_)); }
  void ws() { while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_; }
  bool lit(const char* w) {
    size_t n = std::strlen(w);
    if (s_.compare(i_, n, w) == 0) { i_ += n; return true; }
    return false;
  }
  Json value() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end");
    Json v;
    char c = s_[i_];
    if (c == '{') {
      v.type = Json::Obj; ++i_; ws();
      if (s_[i_] == '}') { ++i_; return v; }
      while (true) {
        ws(); Json k = value(); if (k.type != Json::Str) fail("object key");
        ws(); if (s_[i_++] != ':') fail("':' expected");
        v.obj[k.str] = value(); ws();
        if (s_[i_] == ',') { ++i_; continue; }
        if (s_[i_] == '}') { ++i_; return v; }
        fail("',' or '}' expected");
      }
    }
    if (c == '[') {
      v.type = Json::Arr; ++i_; ws();
      if (s_[i_] == ']') { ++i_; return v; }
      while (true) {
        v.arr.push_back(value()); ws();
        if (s_[i_] == ',') { ++i_; continue; }
        if (s_[i_] == ']') { ++i_; return v; }
        fail("',' or ']' expected");
      }
    }
    if (c == '"') {
      v.type = Json::Str; ++i_;
      while (i_ < s_.size() && s_[i_] != '"') {
        if (s_[i_] == '\\') {
          ++i_;
          char e = s_[i_++];
          switch (e) {
            case 'n': v.str += '\n'; break;
            case 't': v.str += '\t'; break;
            case 'r': v.str += '\r'; break;
            case 'b': v.str += '\b'; break;
            case 'f': v.str += '\f'; break;
            case 'u': {
              unsigned cp = std::stoul(s_.substr(i_, 4), nullptr, 16); i_ += 4;
              if (cp >= 0xD800 && cp <= 0xDBFF && s_.compare(i_, 2, "\\u") == 0) {
                unsigned lo = std::stoul(s_.substr(i_ + 2, 4), nullptr, 16); i_ += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
              }
              if (cp < 0x80) v.str += static_cast<char>(cp);
              else if (cp < 0x800) { v.str += static_cast<char>(0xC0 | (cp >> 6)); v.str += static_cast<char>(0x80 | (cp & 0x3F)); }
              else if (cp < 0x10000) { v.str += static_cast<char>(0xE0 | (cp >> 12)); v.str += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); v.str += static_cast<char>(0x80 | (cp & 0x3F)); }
              else { v.str += static_cast<char>(0xF0 | (cp >> 18)); v.str += static_cast<char>(0x80 | ((cp >> 12) & 0x3F)); v.str += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); v.str += static_cast<char>(0x80 | (cp & 0x3F)); }
              break;
            }
            default: v.str += e;
          }
        } else {
          v.str += s_[i_++];
        }
      }
      if (i_ >= s_.size()) fail("unterminated string");
      ++i_;
      return v;
    }
    if (lit("true")) { v.type = Json::Bool; v.b = true; return v; }
    if (lit("false")) { v.type = Json::Bool; return v; }
    if (lit("null")) return v;
    size_t end = i_;
    while (end < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[end])) || std::strchr("+-.eE", s_[end]))) ++end;
    if (end == i_) fail("unexpected character");
    v.type = Json::Num;
    v.num = std::strtod(s_.substr(i_, end - i_).c_str(), nullptr);
    i_ = end;
    return v;
  }
};

static std::string json_escape(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { o += '\\'; o += static_cast<char>(c); }
    else if (c == '\n') o += "\\n";
    else if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof buf, "\\u%04x", c); o += buf; }
    else o += static_cast<char>(c);
  }
  return o;
}

static std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ------------------------------------------------------------------ images (interleaved 3-channel float, RGB)
struct Image {
  int w = 0, h = 0;
  std::vector<float> px;  // h * w * 3
  float at(int x, int y, int c) const { return px[(static_cast<size_t>(y) * w + x) * 3 + c]; }
};

static float sample(const Image& im, float x, float y, int c) {  // bilinear, clamped to the border
  x = std::min(std::max(x, 0.f), static_cast<float>(im.w - 1));
  y = std::min(std::max(y, 0.f), static_cast<float>(im.h - 1));
  int x0 = static_cast<int>(x), y0 = static_cast<int>(y);
  int x1 = std::min(x0 + 1, im.w - 1), y1 = std::min(y0 + 1, im.h - 1);
  float fx = x - x0, fy = y - y0;
  return (im.at(x0, y0, c) * (1 - fx) + im.at(x1, y0, c) * fx) * (1 - fy) + (im.at(x0, y1, c) * (1 - fx) + im.at(x1, y1, c) * fx) * fy;
}

static Image resize(const Image& im, int w, int h) {  // bilinear with half-pixel centres (cv2.INTER_LINEAR)
  Image o;
  o.w = w; o.h = h; o.px.resize(static_cast<size_t>(w) * h * 3);
  float sx = static_cast<float>(im.w) / w, sy = static_cast<float>(im.h) / h;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        o.px[(static_cast<size_t>(y) * w + x) * 3 + c] = sample(im, (x + 0.5f) * sx - 0.5f, (y + 0.5f) * sy - 0.5f, c);
  return o;
}

// NCHW tensor data with the config's channel order, mean and std (PaddleOCR: (x/255 - mean) / std).
static void normalize_into(const Image& im, float* out, int out_w, const std::vector<float>& mean, const std::vector<float>& stdv, bool bgr) {
  size_t plane = static_cast<size_t>(im.h) * out_w;
  for (int c = 0; c < 3; ++c) {
    int src = bgr ? 2 - c : c;
    for (int y = 0; y < im.h; ++y)
      for (int x = 0; x < out_w; ++x)
        out[c * plane + static_cast<size_t>(y) * out_w + x] = x < im.w ? (im.at(x, y, src) / 255.f - mean[c]) / stdv[c] : 0.f;
  }
}

// ------------------------------------------------------------------ geometry
struct Pt { float x, y; };

static float cross(const Pt& o, const Pt& a, const Pt& b) { return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x); }

static std::vector<Pt> convex_hull(std::vector<Pt> p) {
  std::sort(p.begin(), p.end(), [](const Pt& a, const Pt& b) { return a.x < b.x || (a.x == b.x && a.y < b.y); });
  if (p.size() < 3) return p;
  std::vector<Pt> h(2 * p.size());
  size_t k = 0;
  for (size_t i = 0; i < p.size(); ++i) { while (k >= 2 && cross(h[k - 2], h[k - 1], p[i]) <= 0) --k; h[k++] = p[i]; }
  for (size_t i = p.size() - 1, t = k + 1; i > 0; --i) { while (k >= t && cross(h[k - 2], h[k - 1], p[i - 1]) <= 0) --k; h[k++] = p[i - 1]; }
  h.resize(k - 1);
  return h;
}

struct RotRect { Pt c; float w, h, angle; };  // angle of the w side, radians

static RotRect min_area_rect(const std::vector<Pt>& hull) {
  RotRect best{{0, 0}, 0, 0, 0};
  float best_area = -1;
  for (size_t i = 0; i < hull.size(); ++i) {
    const Pt& a = hull[i];
    const Pt& b = hull[(i + 1) % hull.size()];
    float ang = std::atan2(b.y - a.y, b.x - a.x), ca = std::cos(ang), sa = std::sin(ang);
    float minu = 1e30f, maxu = -1e30f, minv = 1e30f, maxv = -1e30f;
    for (const Pt& p : hull) {
      float u = p.x * ca + p.y * sa, v = -p.x * sa + p.y * ca;
      minu = std::min(minu, u); maxu = std::max(maxu, u); minv = std::min(minv, v); maxv = std::max(maxv, v);
    }
    float area = (maxu - minu) * (maxv - minv);
    if (best_area < 0 || area < best_area) {
      best_area = area;
      float cu = (minu + maxu) / 2, cv = (minv + maxv) / 2;
      best = {{cu * ca - cv * sa, cu * sa + cv * ca}, maxu - minu, maxv - minv, ang};
    }
  }
  if (hull.size() == 1) best = {hull[0], 1, 1, 0};
  return best;
}

static std::vector<Pt> rect_points(const RotRect& r) {
  float ca = std::cos(r.angle), sa = std::sin(r.angle);
  std::vector<Pt> p;
  for (auto s : {std::make_pair(-1, -1), std::make_pair(1, -1), std::make_pair(1, 1), std::make_pair(-1, 1)}) {
    float u = s.first * r.w / 2, v = s.second * r.h / 2;
    p.push_back({r.c.x + u * ca - v * sa, r.c.y + u * sa + v * ca});
  }
  return p;
}

// PaddleOCR's order: top-left, top-right, bottom-right, bottom-left.
static std::vector<Pt> order_points(std::vector<Pt> p) {
  std::sort(p.begin(), p.end(), [](const Pt& a, const Pt& b) { return a.x < b.x; });
  Pt l0 = p[0], l1 = p[1], r0 = p[2], r1 = p[3];
  if (l0.y > l1.y) std::swap(l0, l1);
  if (r0.y > r1.y) std::swap(r0, r1);
  return {l0, r0, r1, l1};
}

static float dist(const Pt& a, const Pt& b) { return std::hypot(a.x - b.x, a.y - b.y); }

// ------------------------------------------------------------------ the pipeline
struct Line { std::string text; float score; std::vector<Pt> box; };

struct Ocr {
  Json cfg;
  std::shared_ptr<PaddlePredictor> det, rec;
  std::vector<std::string> dict;

  static std::shared_ptr<PaddlePredictor> load(const std::string& model, int threads, PowerMode mode) {
    MobileConfig c;
    c.set_model_from_file(model);
    c.set_threads(threads);
    c.set_power_mode(mode);
    return CreatePaddlePredictor<MobileConfig>(c);
  }

  static std::vector<float> floats(const Json& j, std::vector<float> dflt) {
    if (j.type != Json::Arr || j.arr.size() != 3) return dflt;
    return {static_cast<float>(j.arr[0].num), static_cast<float>(j.arr[1].num), static_cast<float>(j.arr[2].num)};
  }

  std::vector<std::vector<Pt>> detect(const Image& im) {
    const Json& d = cfg["det"];
    float limit = static_cast<float>(d["limit_side_len"].number(960));
    std::string type = d["limit_type"].string("max");
    float ratio = 1.f;
    if (type == "max" && std::max(im.w, im.h) > limit) ratio = limit / std::max(im.w, im.h);
    if (type == "min" && std::min(im.w, im.h) < limit) ratio = limit / std::min(im.w, im.h);
    int rw = std::max(static_cast<int>(std::round(im.w * ratio / 32)) * 32, 32);
    int rh = std::max(static_cast<int>(std::round(im.h * ratio / 32)) * 32, 32);
    Image r = resize(im, rw, rh);
    auto in = det->GetInput(0);
    in->Resize({1, 3, rh, rw});
    normalize_into(r, in->mutable_data<float>(), rw, floats(d["mean"], {0.485f, 0.456f, 0.406f}), floats(d["std"], {0.229f, 0.224f, 0.225f}),
                   d["color_order"].string("BGR") == "BGR");
    det->Run();
    auto out = det->GetOutput(0);
    auto shape = out->shape();
    int oh = static_cast<int>(shape[2]), ow = static_cast<int>(shape[3]);
    const float* prob = out->data<float>();
    float thresh = static_cast<float>(d["thresh"].number(0.3)), box_thresh = static_cast<float>(d["box_thresh"].number(0.6));
    float unclip = static_cast<float>(d["unclip_ratio"].number(1.5));
    size_t max_cand = static_cast<size_t>(d["max_candidates"].number(1000));
    std::vector<unsigned char> seen(static_cast<size_t>(oh) * ow, 0);
    std::vector<std::vector<Pt>> boxes;
    std::vector<int> stack;
    for (int start = 0; start < oh * ow && boxes.size() < max_cand; ++start) {
      if (seen[start] || prob[start] <= thresh) continue;
      // One 8-connected region of the bitmap.
      std::vector<Pt> pts;
      double score = 0;
      stack.assign(1, start);
      seen[start] = 1;
      while (!stack.empty()) {
        int k = stack.back(); stack.pop_back();
        int x = k % ow, y = k / ow;
        pts.push_back({static_cast<float>(x), static_cast<float>(y)});
        score += prob[k];
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            int nx = x + dx, ny = y + dy;
            if (nx < 0 || ny < 0 || nx >= ow || ny >= oh) continue;
            int n = ny * ow + nx;
            if (!seen[n] && prob[n] > thresh) { seen[n] = 1; stack.push_back(n); }
          }
      }
      RotRect rr = min_area_rect(convex_hull(pts));
      if (std::min(rr.w, rr.h) < 3) continue;                          // DBPostProcess min_size
      if (score / pts.size() < box_thresh) continue;
      float area = rr.w * rr.h, perim = 2 * (rr.w + rr.h), dd = area * unclip / perim;  // unclip distance
      rr.w += 2 * dd; rr.h += 2 * dd;
      if (std::min(rr.w, rr.h) < 5) continue;
      std::vector<Pt> box = order_points(rect_points(rr));
      for (Pt& p : box) {
        p.x = std::min(std::max(std::round(p.x * im.w / ow), 0.f), static_cast<float>(im.w - 1));
        p.y = std::min(std::max(std::round(p.y * im.h / oh), 0.f), static_cast<float>(im.h - 1));
      }
      if (dist(box[0], box[1]) <= 3 || dist(box[0], box[3]) <= 3) continue;
      boxes.push_back(box);
    }
    // Top to bottom, then left to right within a 10-pixel band (PaddleOCR's sorted_boxes).
    std::sort(boxes.begin(), boxes.end(), [](const std::vector<Pt>& a, const std::vector<Pt>& b) {
      return a[0].y < b[0].y || (a[0].y == b[0].y && a[0].x < b[0].x);
    });
    for (size_t i = 1; i < boxes.size(); ++i)
      for (size_t j = i; j > 0 && std::fabs(boxes[j][0].y - boxes[j - 1][0].y) < 10 && boxes[j][0].x < boxes[j - 1][0].x; --j)
        std::swap(boxes[j], boxes[j - 1]);
    return boxes;
  }

  // The box's quadrilateral warped to an upright rectangle (get_rotate_crop_image).
  static Image crop(const Image& im, const std::vector<Pt>& q) {
    int w = std::max(1, static_cast<int>(std::max(dist(q[0], q[1]), dist(q[2], q[3]))));
    int h = std::max(1, static_cast<int>(std::max(dist(q[0], q[3]), dist(q[1], q[2]))));
    Image o;
    o.w = w; o.h = h; o.px.resize(static_cast<size_t>(w) * h * 3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        float u = (x + 0.5f) / w, v = (y + 0.5f) / h;  // bilinear patch over the quad
        float sx = (1 - u) * (1 - v) * q[0].x + u * (1 - v) * q[1].x + u * v * q[2].x + (1 - u) * v * q[3].x;
        float sy = (1 - u) * (1 - v) * q[0].y + u * (1 - v) * q[1].y + u * v * q[2].y + (1 - u) * v * q[3].y;
        for (int c = 0; c < 3; ++c) o.px[(static_cast<size_t>(y) * w + x) * 3 + c] = sample(im, sx - 0.5f, sy - 0.5f, c);
      }
    if (h >= 1.5f * w) {  // vertical text: rotate 90 degrees counter-clockwise, as PaddleOCR does
      Image r;
      r.w = h; r.h = w; r.px.resize(o.px.size());
      for (int y = 0; y < r.h; ++y)
        for (int x = 0; x < r.w; ++x)
          for (int c = 0; c < 3; ++c) r.px[(static_cast<size_t>(y) * r.w + x) * 3 + c] = o.at(w - 1 - y, x, c);
      return r;
    }
    return o;
  }

  std::pair<std::string, float> recognize(const Image& im) {
    const Json& r = cfg["rec"];
    int ih = 48, iw = 320;
    if (r["image_shape"].type == Json::Arr && r["image_shape"].arr.size() == 3) {
      ih = static_cast<int>(r["image_shape"].arr[1].num);
      iw = static_cast<int>(r["image_shape"].arr[2].num);
    }
    float wh = static_cast<float>(im.w) / im.h;
    int width = std::max(iw, static_cast<int>(ih * wh));
    int rw = std::min(width, static_cast<int>(std::ceil(ih * wh)));
    Image s = resize(im, std::max(rw, 1), ih);
    auto in = rec->GetInput(0);
    in->Resize({1, 3, ih, width});
    normalize_into(s, in->mutable_data<float>(), width, floats(r["mean"], {0.5f, 0.5f, 0.5f}), floats(r["std"], {0.5f, 0.5f, 0.5f}),
                   r["color_order"].string("BGR") == "BGR");
    rec->Run();
    auto out = rec->GetOutput(0);
    auto shape = out->shape();
    int steps = static_cast<int>(shape[1]), classes = static_cast<int>(shape[2]);
    const float* p = out->data<float>();
    std::string text;
    double score = 0;
    int n = 0, prev = -1;
    for (int t = 0; t < steps; ++t) {
      const float* row = p + static_cast<size_t>(t) * classes;
      int best = static_cast<int>(std::max_element(row, row + classes) - row);
      if (best != 0 && best != prev && best - 1 < static_cast<int>(dict.size())) {  // CTC: 0 is the blank
        text += dict[best - 1];
        score += row[best];
        ++n;
      }
      prev = best;
    }
    return {text, n ? static_cast<float>(score / n) : 0.f};
  }
};

static PowerMode power_mode(const std::string& s) {
  static const std::map<std::string, PowerMode> m = {
      {"LITE_POWER_HIGH", PowerMode::LITE_POWER_HIGH}, {"LITE_POWER_LOW", PowerMode::LITE_POWER_LOW},
      {"LITE_POWER_FULL", PowerMode::LITE_POWER_FULL}, {"LITE_POWER_NO_BIND", PowerMode::LITE_POWER_NO_BIND},
      {"LITE_POWER_RAND_HIGH", PowerMode::LITE_POWER_RAND_HIGH}, {"LITE_POWER_RAND_LOW", PowerMode::LITE_POWER_RAND_LOW}};
  auto it = m.find(s);
  if (it == m.end()) throw std::runtime_error("--power-mode " + s + ": unknown (LITE_POWER_HIGH, _LOW, _FULL, _NO_BIND, _RAND_HIGH, _RAND_LOW)");
  return it->second;
}

int main(int argc, char** argv) {
  std::string config = "config.json", image = "test/image.jpg", mode;
  int threads = -1, warmup = 1, repeats = 1;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--config") config = next();
      else if (a == "--image") image = next();
      else if (a == "--threads") threads = std::stoi(next());
      else if (a == "--power-mode") mode = next();
      else if (a == "--warmup") warmup = std::stoi(next());
      else if (a == "--repeats") repeats = std::stoi(next());
      else if (a == "--help" || a == "-h") {
        std::printf("usage: ppocr_runner --config config.json --image IMG [--threads N] [--power-mode MODE] [--warmup W] [--repeats R]\n");
        return 0;
      } else throw std::runtime_error("unknown argument " + a);
    }
    Ocr ocr;
    ocr.cfg = JsonParser(read_file(config)).parse();
    if (threads < 0) threads = static_cast<int>(ocr.cfg["threads"].number(4));
    if (mode.empty()) mode = ocr.cfg["power_mode"].string("LITE_POWER_HIGH");
    if (repeats < 1 || warmup < 0 || threads < 1) throw std::runtime_error("--threads and --repeats must be >= 1, --warmup >= 0");
    PowerMode pm = power_mode(mode);
    if (ocr.cfg["det"].type != Json::Obj || ocr.cfg["rec"].type != Json::Obj) throw std::runtime_error(config + ": needs both det and rec sections");
    ocr.det = Ocr::load(ocr.cfg["det"]["model"].string("models/det.nb"), threads, pm);
    ocr.rec = Ocr::load(ocr.cfg["rec"]["model"].string("models/rec.nb"), threads, pm);
    {
      std::istringstream lines(read_file(ocr.cfg["rec"]["dict"].string("dict/ppocr_keys_v1.txt")));
      std::string ln;
      while (std::getline(lines, ln)) {
        if (!ln.empty() && ln.back() == '\r') ln.pop_back();
        ocr.dict.push_back(ln);
      }
      if (ocr.cfg["rec"]["use_space_char"].type != Json::Bool || ocr.cfg["rec"]["use_space_char"].b) ocr.dict.push_back(" ");
    }
    int w, h, n;
    unsigned char* raw = stbi_load(image.c_str(), &w, &h, &n, 3);
    if (!raw) throw std::runtime_error("cannot decode image " + image + ": " + stbi_failure_reason());
    Image im;
    im.w = w; im.h = h; im.px.assign(raw, raw + static_cast<size_t>(w) * h * 3);
    stbi_image_free(raw);

    using clock = std::chrono::steady_clock;
    auto ms = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    double t_det = 0, t_rec = 0, t_total = 0;
    std::vector<Line> lines;
    for (int it = 0; it < warmup + repeats; ++it) {
      auto t0 = clock::now();
      auto boxes = ocr.detect(im);
      auto t1 = clock::now();
      std::vector<Line> found;
      for (auto& b : boxes) {
        auto res = ocr.recognize(Ocr::crop(im, b));
        if (!res.first.empty()) found.push_back({res.first, res.second, b});
      }
      auto t2 = clock::now();
      if (it >= warmup) { t_det += ms(t0, t1); t_rec += ms(t1, t2); t_total += ms(t0, t2); }
      lines = found;
    }
    std::ostringstream o;
    o.setf(std::ios::fixed);
    o.precision(3);
    o << "{\"lines\":[";
    for (size_t i = 0; i < lines.size(); ++i) {
      o << (i ? "," : "") << "{\"text\":\"" << json_escape(lines[i].text) << "\",\"score\":" << lines[i].score << ",\"box\":[";
      for (int k = 0; k < 4; ++k) o << (k ? "," : "") << "[" << static_cast<int>(lines[i].box[k].x) << "," << static_cast<int>(lines[i].box[k].y) << "]";
      o << "]}";
    }
    o << "],\"timings_ms\":{\"det\":" << t_det / repeats << ",\"rec\":" << t_rec / repeats << ",\"total\":" << t_total / repeats << "}"
      << ",\"threads\":" << threads << ",\"power_mode\":\"" << mode << "\",\"warmup\":" << warmup << ",\"repeats\":" << repeats << "}";
    for (auto& l : lines) std::printf("%s\t%.3f\n", l.text.c_str(), l.score);
    std::printf("det %.2f ms, rec %.2f ms, total %.2f ms (mean of %d, %d threads, %s)\n", t_det / repeats, t_rec / repeats, t_total / repeats,
                repeats, threads, mode.c_str());
    std::printf("%s\n", o.str().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ppocr_runner: error: %s\n", e.what());
    return 2;
  }
}
