// Microphone capture: getUserMedia → AudioWorklet (mic-worklet.js) → PCM16 frames for the agent.

export class Microphone {
  /**
   * @param {number} targetRate the input sample rate declared in Settings (audio.input.sample_rate)
   * @param {(frame: ArrayBuffer) => void} onFrame called with each 20 ms PCM16 frame
   */
  constructor(targetRate, onFrame) {
    this.targetRate = targetRate;
    this.onFrame = onFrame;
    this.context = null;
    this.stream = null;
    this.frames = 0; // frames produced since the page loaded (shown on the page, read by tests)
    this.bytes = 0;
  }

  get running() {
    return this.context !== null;
  }

  /** Ask for the microphone and start producing frames. Throws (e.g. NotAllowedError) when refused. */
  async start() {
    // The browser's echo cancellation keeps the agent's own voice, played on the speakers, out of the mic.
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    try {
      this.context = new AudioContext(); // the device's own rate; the worklet resamples to targetRate
      await this.context.audioWorklet.addModule(new URL("./mic-worklet.js", import.meta.url));
      const source = this.context.createMediaStreamSource(this.stream);
      // No outputs: the node is a sink, so nothing of the microphone is played back.
      const encoder = new AudioWorkletNode(this.context, "pcm16-encoder", {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        processorOptions: { targetRate: this.targetRate },
      });
      encoder.port.onmessage = (event) => {
        this.frames += 1;
        this.bytes += event.data.byteLength;
        this.onFrame(event.data);
      };
      source.connect(encoder);
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  async stop() {
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    this.stream = null;
    const context = this.context;
    this.context = null;
    if (context) await context.close();
  }
}
