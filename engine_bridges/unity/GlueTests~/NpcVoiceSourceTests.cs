using System;
using System.Collections.Generic;
using System.Linq;
using System.Reflection;
using System.Threading;
using NpcVoice.Unity;
using NUnit.Framework;
using UnityEngine;

namespace NpcVoice.GlueTests
{
    /// <summary>
    /// NpcVoiceSource driven outside Unity against the stub UnityEngine (Stubs~/): the test plays the engine,
    /// calling Awake, OnAudioFilterRead (as the audio thread would) and Update (as the main loop would), with a
    /// live daemon at $NPC_VOICE_ADDR. Compiled and run only by run_tests.sh, never inside Unity.
    /// </summary>
    [TestFixture]
    public class NpcVoiceSourceTests
    {
        private const BindingFlags Private = BindingFlags.Instance | BindingFlags.NonPublic;
        private string _address;

        [SetUp]
        public void SetUp()
        {
            _address = Environment.GetEnvironmentVariable("NPC_VOICE_ADDR");
            if (string.IsNullOrEmpty(_address))
            {
                Assert.Ignore("NPC_VOICE_ADDR is not set: live tests skipped");
            }
        }

        [TearDown]
        public void TearDown() => Application.StubQuit();  // closes the shared connections like a real quit

        private sealed class Engine
        {
            public readonly NpcVoiceSource Source = new NpcVoiceSource();
            public readonly List<string> Words = new List<string>();
            public readonly List<string> Visemes = new List<string>();
            public readonly List<string> Errors = new List<string>();
            public int Started;
            public int Finished;
            public bool LastCancelled;
            public long NonZeroSamples;
            public float LastPeak;

            public Engine(string address, string character, int outputRate)
            {
                AudioSettings.StubOutputSampleRate = outputRate;
                typeof(NpcVoiceSource).GetField("address", Private).SetValue(Source, address);
                Source.Character = character;
                Call("Awake");
                Source.onWord.AddListener((w, s) => Words.Add(w));
                Source.onViseme.AddListener((v, s) => Visemes.Add(v));
                Source.onLineStarted.AddListener(t => Started++);
                Source.onLineFinished.AddListener((t, cancelled) => { Finished++; LastCancelled = cancelled; });
                Source.onError.AddListener((code, message) => Errors.Add(code + ": " + message));
            }

            public void Call(string method, params object[] args) =>
                typeof(NpcVoiceSource).GetMethod(method, Private).Invoke(Source, args);

            /// <summary>One engine frame: a stereo DSP buffer of carrier (1.0) through the filter, then Update.</summary>
            public void Frame()
            {
                var data = Enumerable.Repeat(1f, 2 * 1024).ToArray();
                Call("OnAudioFilterRead", data, 2);
                NonZeroSamples += data.Count(x => x != 0f);
                LastPeak = data.Max(Math.Abs);
                Call("Update");
            }

            public void RunUntil(Func<bool> done, int maxFrames = 20000)
            {
                for (int i = 0; i < maxFrames && !done(); i++)
                {
                    Frame();
                    if (Source.IsSpeaking && Source.Client != null)
                    {
                        Thread.Sleep(1);  // let the network thread deliver (audio is pulled faster than real time: underruns happen)
                    }
                }
            }
        }

        private string Character()
        {
            string name = NpcVoiceSource.SharedClient(_address, "").ListCharacters().DefaultCharacter;
            return name + "/" + new System.Random().Next(1000000, 9999999);
        }

        [Test, Timeout(120000)]
        public void SpeakPlaysTheLineAndRaisesMarksOnTheAudioClock([Values(48000, 32000)] int outputRate)
        {
            var engine = new Engine(_address, Character(), outputRate);
            engine.Source.Speak("Halt! Who goes there?");
            engine.RunUntil(() => engine.Finished > 0 || engine.Errors.Count > 0);
            Assert.IsEmpty(engine.Errors);
            Assert.AreEqual(1, engine.Started);
            Assert.AreEqual(1, engine.Finished);
            Assert.IsFalse(engine.LastCancelled);
            Assert.IsNotEmpty(engine.Words, "word events");
            Assert.IsNotEmpty(engine.Visemes, "viseme events");
            Assert.Greater(engine.NonZeroSamples, outputRate / 2, "half a second of sound at least");
        }

        [Test, Timeout(120000)]
        public void CancelFadesToSilenceAndReportsTheLineCancelled()
        {
            var engine = new Engine(_address, Character(), 48000);
            engine.Source.Speak("Welcome, traveller. The road north is closed since the bridge fell, so you will " +
                                "have to take the mountain pass. Bring warm clothes and plenty of food.");
            engine.RunUntil(() => engine.NonZeroSamples > 48000 || engine.Errors.Count > 0);
            Assert.IsEmpty(engine.Errors);
            engine.Source.Cancel();
            engine.Frame();
            engine.Frame();
            Assert.AreEqual(0f, engine.LastPeak, "silent within two buffers of Cancel");
            Assert.AreEqual(1, engine.Finished);
            Assert.IsTrue(engine.LastCancelled);
            engine.Source.Speak("Next.");
            engine.RunUntil(() => engine.Finished > 1 || engine.Errors.Count > 0);
            Assert.AreEqual(2, engine.Finished, "a line after Cancel plays to the end");
            Assert.IsFalse(engine.LastCancelled);
        }

        [Test, Timeout(60000)]
        public void UnknownCharacterRaisesOnErrorOnTheMainThread()
        {
            var engine = new Engine(_address, "no-such-character-" + Guid.NewGuid().ToString("N"), 48000);
            engine.Source.Speak("Hello?");
            engine.RunUntil(() => engine.Errors.Count > 0 && engine.Finished > 0);
            Assert.AreEqual(1, engine.Errors.Count);
            StringAssert.StartsWith("NotFound: ", engine.Errors[0]);
            Assert.AreEqual(0, engine.NonZeroSamples);
            Assert.AreEqual(0, engine.Started, "a line without audio never starts");
            Assert.AreEqual(1, engine.Finished, "but it finishes");
            Assert.IsFalse(engine.LastCancelled);
        }
    }
}
