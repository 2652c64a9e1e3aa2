// AudioWorklet processor: microphone samples → PCM16 little-endian mono frames at the declared input rate.
//
// It runs on the audio rendering thread, at the AudioContext's rate (`sampleRate`, a global here: usually
// 48000 or 44100). The agent was told `audio.input {encoding: "linear16", sample_rate: targetRate}`, so the
// processor resamples to targetRate itself (every browser can, unlike an AudioContext at a custom rate) and
// posts one ArrayBuffer per FRAME_MS of audio: 20 ms at 16 kHz = 320 samples = 640 bytes.

const FRAME_MS = 20;

class Pcm16Encoder extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const targetRate = options.processorOptions.targetRate;
    // Input samples per output sample: 3 for 48 kHz → 16 kHz, 2.75625 for 44.1 kHz → 16 kHz.
    this.step = sampleRate / targetRate;
    this.samplesPerFrame = Math.round((targetRate * FRAME_MS) / 1000);
    this.newFrame();
    // Resampler state, carried across the 128-sample blocks the audio thread hands over, so block edges
    // leave no clicks and no drift.
    this.inputCount = 0; // input samples seen so far
    this.nextOutputAt = this.step; // input position at which the next output sample is due
    this.sum = 0; // input samples accumulated since the last output sample
    this.count = 0;
    this.last = 0;
  }

  newFrame() {
    this.frame = new DataView(new ArrayBuffer(this.samplesPerFrame * 2));
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0]; // mono: the first channel of the first input
    if (!channel) return true; // no source connected (yet): keep the processor alive
    for (const sample of channel) {
      this.sum += sample;
      this.count += 1;
      this.inputCount += 1;
      // Downsampling: each output sample is the mean of the input samples of its period, a simple low-pass
      // that keeps most of the aliasing out. Upsampling (rare) repeats the last value.
      while (this.inputCount >= this.nextOutputAt) {
        if (this.count > 0) {
          this.last = this.sum / this.count;
          this.sum = 0;
          this.count = 0;
        }
        this.push(this.last);
        this.nextOutputAt += this.step;
      }
    }
    return true;
  }

  /** Append one sample (float in [-1, 1]) as a 16-bit integer; post the frame when it is full. */
  push(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    const int16 = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    this.frame.setInt16(this.filled * 2, Math.round(int16), true); // true: little-endian, as linear16 means
    this.filled += 1;
    if (this.filled === this.samplesPerFrame) {
      const buffer = this.frame.buffer;
      this.port.postMessage(buffer, [buffer]); // transferred, not copied
      this.newFrame();
    }
  }
}

registerProcessor("pcm16-encoder", Pcm16Encoder);
