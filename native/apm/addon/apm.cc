// Parley's N-API addon over WebRTC's audio processing module (APM) from
// libwebrtc-audio-processing 0.3 (Debian). One `Apm` object processes one call's
// audio: 48 kHz mono signed 16-bit PCM in frames of 10 ms (480 samples).
//
//   processRender(Int16Array(480))              far end, as written to the speaker
//   processCapture(Int16Array(480)) -> { frame: Int16Array(480), voice: bool }
//   processCaptureInPlace(Int16Array(480)) -> voice: bool   the frame itself becomes the processed one
//                                                            (no allocation: the hot path's form)
//   setStreamDelayMs(ms)                         render -> capture delay of the devices
//   setEchoCancellation(bool) / setNoiseSuppression(bool) / setGainControl(bool)
//   setNoiseSuppressionHigh(bool)               suppressor level kHigh (true, the default) or kModerate
//   echoMetrics() -> { erlDb, erleDb, delayMedianMs, delayStdMs } (APM's own estimates)
//
// The APM is not thread-safe between render and capture calls made at the same
// time; Node calls both from its one JS thread, so they never overlap.
#include <node_api.h>

#include <cstring>
#include <memory>
#include <string>

#include "webrtc/modules/audio_processing/include/audio_processing.h"
#include "webrtc/modules/interface/module_common_types.h"

namespace {

constexpr int kRate = 48000;
constexpr size_t kFrame = 480;  // 10 ms at 48 kHz

struct Apm {
  std::unique_ptr<webrtc::AudioProcessing> apm;
  webrtc::AudioFrame render;
  webrtc::AudioFrame capture;
  int delayMs = 0;
};

#define CALL(env, expr)                                   \
  do {                                                    \
    if ((expr) != napi_ok) {                              \
      const napi_extended_error_info* info = nullptr;     \
      napi_get_last_error_info((env), &info);             \
      bool pending = false;                               \
      napi_is_exception_pending((env), &pending);         \
      if (!pending)                                       \
        napi_throw_error((env), "APM_NAPI",               \
                         info && info->error_message      \
                             ? info->error_message        \
                             : "N-API call failed");      \
      return nullptr;                                     \
    }                                                     \
  } while (0)

napi_value ThrowCode(napi_env env, const char* code, const std::string& message,
                     bool range = false) {
  if (range)
    napi_throw_range_error(env, code, message.c_str());
  else
    napi_throw_error(env, code, message.c_str());
  return nullptr;
}

const char* ApmError(int err) {
  switch (err) {
    case webrtc::AudioProcessing::kBadParameterError: return "bad parameter";
    case webrtc::AudioProcessing::kBadSampleRateError: return "bad sample rate";
    case webrtc::AudioProcessing::kBadDataLengthError: return "bad data length";
    case webrtc::AudioProcessing::kBadNumberChannelsError: return "bad number of channels";
    case webrtc::AudioProcessing::kStreamParameterNotSetError: return "stream parameter not set";
    case webrtc::AudioProcessing::kNotEnabledError: return "not enabled";
    case webrtc::AudioProcessing::kBadStreamParameterWarning: return "bad stream parameter (warning)";
    default: return "APM error";
  }
}

// Reads `this` and the first argument as an Int16Array of exactly kFrame samples.
bool FrameArg(napi_env env, napi_callback_info info, Apm** self, int16_t** data, const char* what) {
  size_t argc = 1;
  napi_value argv[1];
  napi_value thiz;
  if (napi_get_cb_info(env, info, &argc, argv, &thiz, nullptr) != napi_ok) return false;
  if (napi_unwrap(env, thiz, reinterpret_cast<void**>(self)) != napi_ok || !*self) {
    napi_throw_type_error(env, "APM_THIS", "not an Apm object");
    return false;
  }
  bool isTyped = false;
  if (argc < 1 || napi_is_typedarray(env, argv[0], &isTyped) != napi_ok || !isTyped) {
    napi_throw_type_error(env, "APM_FRAME_TYPE",
                          (std::string(what) + " frame must be an Int16Array of 480 samples (10 ms, 48 kHz mono)").c_str());
    return false;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void* raw = nullptr;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &raw, nullptr, nullptr) != napi_ok) return false;
  if (type != napi_int16_array) {
    napi_throw_type_error(env, "APM_FRAME_TYPE",
                          (std::string(what) + " frame must be an Int16Array of 480 samples (10 ms, 48 kHz mono)").c_str());
    return false;
  }
  if (length != kFrame) {
    napi_throw_range_error(env, "APM_FRAME_LENGTH",
                           (std::string(what) + " frame must be 480 samples (10 ms at 48 kHz mono), got " +
                            std::to_string(length)).c_str());
    return false;
  }
  *data = static_cast<int16_t*>(raw);
  return true;
}

void PrepareFrame(webrtc::AudioFrame& f, const int16_t* data) {
  f.sample_rate_hz_ = kRate;
  f.num_channels_ = 1;
  f.samples_per_channel_ = kFrame;
  f.interleaved_ = true;
  f.vad_activity_ = webrtc::AudioFrame::kVadUnknown;
  std::memcpy(f.data_, data, kFrame * sizeof(int16_t));
}

void Finalize(napi_env, void* data, void*) { delete static_cast<Apm*>(data); }

bool GetBoolOption(napi_env env, napi_value obj, const char* key, bool fallback) {
  napi_valuetype t;
  if (napi_typeof(env, obj, &t) != napi_ok || t != napi_object) return fallback;
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return fallback;
  napi_value v;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return fallback;
  bool out = fallback;
  if (napi_get_value_bool(env, v, &out) != napi_ok) return fallback;
  return out;
}

int EnableAec(webrtc::AudioProcessing* apm, bool on) {
  webrtc::EchoCancellation* ec = apm->echo_cancellation();
  int err = ec->Enable(on);
  if (err || !on) return err;
  ec->enable_drift_compensation(false);
  ec->set_suppression_level(webrtc::EchoCancellation::kHighSuppression);
  ec->enable_metrics(true);
  ec->enable_delay_logging(true);
  return 0;
}

int EnableNs(webrtc::AudioProcessing* apm, bool on) { return apm->noise_suppression()->Enable(on); }

// kHigh while there may be residual echo to remove (the echo canceller runs), kModerate otherwise: the suppressor
// at kHigh cost speech similarity 0.02 against 0.013 at kModerate with no echo path (docs/audio.md, "Noise
// suppression's level"). The level is kept across Enable(), and changing it does not reset the suppressor's state
// (NoiseSuppressionImpl::set_level -> WebRtcNs_set_policy).
int SetNsLevel(webrtc::AudioProcessing* apm, bool high) {
  return apm->noise_suppression()->set_level(high ? webrtc::NoiseSuppression::kHigh : webrtc::NoiseSuppression::kModerate);
}

int EnableAgc(webrtc::AudioProcessing* apm, bool on) {
  webrtc::GainControl* gc = apm->gain_control();
  if (on) {
    // Digital adaptive AGC (no analog mic volume to drive): WebRTC's defaults,
    // a target of -3 dBFS with up to 9 dB compression gain and the limiter on.
    if (int err = gc->set_mode(webrtc::GainControl::kAdaptiveDigital)) return err;
    if (int err = gc->set_target_level_dbfs(3)) return err;
    if (int err = gc->set_compression_gain_db(9)) return err;
    if (int err = gc->enable_limiter(true)) return err;
  }
  return gc->Enable(on);
}

napi_value New(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_value thiz;
  CALL(env, napi_get_cb_info(env, info, &argc, argv, &thiz, nullptr));
  napi_value undefined;
  CALL(env, napi_get_undefined(env, &undefined));
  napi_value opts = argc >= 1 ? argv[0] : undefined;
  bool aec = GetBoolOption(env, opts, "echoCancellation", true);
  bool ns = GetBoolOption(env, opts, "noiseSuppression", true);
  bool agc = GetBoolOption(env, opts, "gainControl", true);
  bool nsHigh = GetBoolOption(env, opts, "noiseSuppressionHigh", true);
  bool delayAgnostic = GetBoolOption(env, opts, "delayAgnostic", false);
  bool extendedFilter = GetBoolOption(env, opts, "extendedFilter", true);

  webrtc::Config config;
  // The extended filter: a longer (~128 ms), more robust adaptive filter that
  // absorbs errors in the reported delay. The delay-agnostic mode (the APM
  // estimates the render->capture delay itself) is off by default: Parley
  // reports the delay PulseAudio measures, and in live calls here the
  // estimator sometimes locked onto a wrong delay (docs/audio.md).
  config.Set<webrtc::ExtendedFilter>(new webrtc::ExtendedFilter(extendedFilter));
  config.Set<webrtc::DelayAgnostic>(new webrtc::DelayAgnostic(delayAgnostic));
  // The experimental AGC drives an analog mic volume Parley does not control.
  config.Set<webrtc::ExperimentalAgc>(new webrtc::ExperimentalAgc(false));

  std::unique_ptr<Apm> self(new Apm());
  self->apm.reset(webrtc::AudioProcessing::Create(config));
  if (!self->apm) return ThrowCode(env, "APM_CREATE", "webrtc::AudioProcessing::Create failed");
  webrtc::AudioProcessing* apm = self->apm.get();
  int err = apm->Initialize(kRate, kRate, kRate, webrtc::AudioProcessing::kMono,
                            webrtc::AudioProcessing::kMono, webrtc::AudioProcessing::kMono);
  if (err) return ThrowCode(env, "APM_INIT", std::string("APM Initialize failed: ") + ApmError(err));
  apm->high_pass_filter()->Enable(true);
  apm->voice_detection()->Enable(true);
  apm->voice_detection()->set_likelihood(webrtc::VoiceDetection::kModerateLikelihood);
  apm->voice_detection()->set_frame_size_ms(10);
  if ((err = EnableAec(apm, aec)) || (err = SetNsLevel(apm, nsHigh)) || (err = EnableNs(apm, ns)) || (err = EnableAgc(apm, agc)))
    return ThrowCode(env, "APM_CONFIG", std::string("APM configuration failed: ") + ApmError(err));
  CALL(env, napi_wrap(env, thiz, self.get(), Finalize, nullptr, nullptr));
  self.release();
  return thiz;
}

napi_value ProcessRender(napi_env env, napi_callback_info info) {
  Apm* self;
  int16_t* data;
  if (!FrameArg(env, info, &self, &data, "render")) return nullptr;
  PrepareFrame(self->render, data);
  int err = self->apm->AnalyzeReverseStream(&self->render);
  if (err) return ThrowCode(env, "APM_RENDER", std::string("APM render analysis failed: ") + ApmError(err));
  return nullptr;
}

// Runs one capture frame through the APM (the result stays in self->capture); false after throwing.
bool RunCapture(napi_env env, Apm* self, const int16_t* data) {
  PrepareFrame(self->capture, data);
  webrtc::AudioProcessing* apm = self->apm.get();
  // Must precede every ProcessStream while the AEC is on.
  apm->set_stream_delay_ms(self->delayMs);
  int err = apm->ProcessStream(&self->capture);
  if (err && err != webrtc::AudioProcessing::kBadStreamParameterWarning) {
    ThrowCode(env, "APM_CAPTURE", std::string("APM capture processing failed: ") + ApmError(err));
    return false;
  }
  return true;
}

napi_value ProcessCaptureInPlace(napi_env env, napi_callback_info info) {
  Apm* self;
  int16_t* data;
  if (!FrameArg(env, info, &self, &data, "capture")) return nullptr;
  if (!RunCapture(env, self, data)) return nullptr;
  std::memcpy(data, self->capture.data_, kFrame * sizeof(int16_t));
  napi_value voice;
  CALL(env, napi_get_boolean(env, self->apm->voice_detection()->stream_has_voice(), &voice));
  return voice;
}

napi_value ProcessCapture(napi_env env, napi_callback_info info) {
  Apm* self;
  int16_t* data;
  if (!FrameArg(env, info, &self, &data, "capture")) return nullptr;
  if (!RunCapture(env, self, data)) return nullptr;
  webrtc::AudioProcessing* apm = self->apm.get();
  napi_value buffer, out, result, voice;
  void* outData = nullptr;
  CALL(env, napi_create_arraybuffer(env, kFrame * sizeof(int16_t), &outData, &buffer));
  std::memcpy(outData, self->capture.data_, kFrame * sizeof(int16_t));
  CALL(env, napi_create_typedarray(env, napi_int16_array, kFrame, buffer, 0, &out));
  CALL(env, napi_get_boolean(env, apm->voice_detection()->stream_has_voice(), &voice));
  CALL(env, napi_create_object(env, &result));
  CALL(env, napi_set_named_property(env, result, "frame", out));
  CALL(env, napi_set_named_property(env, result, "voice", voice));
  return result;
}

Apm* This(napi_env env, napi_callback_info info, napi_value* arg) {
  size_t argc = 1;
  napi_value argv[1];
  napi_value thiz;
  if (napi_get_cb_info(env, info, &argc, argv, &thiz, nullptr) != napi_ok) return nullptr;
  Apm* self = nullptr;
  if (napi_unwrap(env, thiz, reinterpret_cast<void**>(&self)) != napi_ok || !self) {
    napi_throw_type_error(env, "APM_THIS", "not an Apm object");
    return nullptr;
  }
  if (arg) {
    if (argc < 1) {
      napi_throw_type_error(env, "APM_ARG", "missing argument");
      return nullptr;
    }
    *arg = argv[0];
  }
  return self;
}

napi_value SetStreamDelayMs(napi_env env, napi_callback_info info) {
  napi_value arg;
  Apm* self = This(env, info, &arg);
  if (!self) return nullptr;
  double ms;
  if (napi_get_value_double(env, arg, &ms) != napi_ok || !(ms >= 0 && ms <= 500))
    return ThrowCode(env, "APM_DELAY", "stream delay must be a number of ms in 0-500", true);
  self->delayMs = static_cast<int>(ms + 0.5);
  return nullptr;
}

napi_value SetSwitch(napi_env env, napi_callback_info info, int (*fn)(webrtc::AudioProcessing*, bool)) {
  napi_value arg;
  Apm* self = This(env, info, &arg);
  if (!self) return nullptr;
  bool on;
  if (napi_get_value_bool(env, arg, &on) != napi_ok)
    return ThrowCode(env, "APM_ARG", "expected a boolean");
  int err = fn(self->apm.get(), on);
  if (err) return ThrowCode(env, "APM_CONFIG", std::string("APM configuration failed: ") + ApmError(err));
  return nullptr;
}
napi_value SetEchoCancellation(napi_env env, napi_callback_info info) { return SetSwitch(env, info, EnableAec); }
napi_value SetNoiseSuppression(napi_env env, napi_callback_info info) { return SetSwitch(env, info, EnableNs); }
napi_value SetGainControl(napi_env env, napi_callback_info info) { return SetSwitch(env, info, EnableAgc); }
napi_value SetNoiseSuppressionHigh(napi_env env, napi_callback_info info) { return SetSwitch(env, info, SetNsLevel); }

napi_value EchoMetrics(napi_env env, napi_callback_info info) {
  Apm* self = This(env, info, nullptr);
  if (!self) return nullptr;
  napi_value result;
  CALL(env, napi_create_object(env, &result));
  webrtc::EchoCancellation* ec = self->apm->echo_cancellation();
  if (!ec->is_enabled()) return result;
  webrtc::EchoCancellation::Metrics m;
  auto set = [&](const char* key, double v) -> bool {
    napi_value n;
    return napi_create_double(env, v, &n) == napi_ok && napi_set_named_property(env, result, key, n) == napi_ok;
  };
  if (ec->GetMetrics(&m) == 0) {
    // APM reports ERL / ERLE as average levels in dB (-100 = not yet known).
    set("erlDb", m.echo_return_loss.average);
    set("erleDb", m.echo_return_loss_enhancement.average);
  }
  int median = 0, stddev = 0;
  if (ec->GetDelayMetrics(&median, &stddev) == 0) {
    set("delayMedianMs", median);
    set("delayStdMs", stddev);
  }
  return result;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"processRender", nullptr, ProcessRender, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"processCapture", nullptr, ProcessCapture, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"processCaptureInPlace", nullptr, ProcessCaptureInPlace, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setStreamDelayMs", nullptr, SetStreamDelayMs, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setEchoCancellation", nullptr, SetEchoCancellation, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setNoiseSuppression", nullptr, SetNoiseSuppression, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setGainControl", nullptr, SetGainControl, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setNoiseSuppressionHigh", nullptr, SetNoiseSuppressionHigh, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"echoMetrics", nullptr, EchoMetrics, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_value cls;
  CALL(env, napi_define_class(env, "Apm", NAPI_AUTO_LENGTH, New, nullptr,
                              sizeof(methods) / sizeof(methods[0]), methods, &cls));
  CALL(env, napi_set_named_property(env, exports, "Apm", cls));
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
