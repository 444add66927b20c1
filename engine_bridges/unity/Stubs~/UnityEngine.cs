// Compile-check stub of the few UnityEngine types the package's MonoBehaviour glue uses. NOT Unity: bodies are
// placeholders so `mcs` can type-check Runtime/Unity/ outside the editor. The folder ends in "~" so Unity never
// imports it. Keep signatures identical to Unity's (see docs.unity3d.com/ScriptReference).
using System;

namespace UnityEngine
{
    public class Object
    {
        public string name { get; set; }
    }

    public class GameObject : Object
    {
    }

    public class Component : Object
    {
        public GameObject gameObject => null;

        public T GetComponent<T>() => default(T);
    }

    public class Behaviour : Component
    {
        public bool enabled { get; set; }
    }

    public class MonoBehaviour : Behaviour
    {
    }

    public sealed class AudioClip : Object
    {
        public static AudioClip Create(string name, int lengthSamples, int channels, int frequency, bool stream) => new AudioClip();

        public bool SetData(float[] data, int offsetSamples) => true;
    }

    public sealed class AudioSource : Behaviour
    {
        public AudioClip clip { get; set; }
        public bool loop { get; set; }
        public bool playOnAwake { get; set; }
        public bool isPlaying => false;

        public void Play()
        {
        }

        public void Stop()
        {
        }
    }

    public sealed class SkinnedMeshRenderer : Component
    {
        public void SetBlendShapeWeight(int index, float value)
        {
        }
    }

    public enum KeyCode
    {
        None = 0,
        Return = 13,
        Space = 32,
    }

    public sealed class Input
    {
        public static bool GetKeyDown(KeyCode key) => false;
    }

    public sealed class Time
    {
        public static float deltaTime => 0f;
    }

    public struct Mathf
    {
        public static float MoveTowards(float current, float target, float maxDelta) => target;
    }

    public sealed class AudioSettings
    {
        public static int outputSampleRate => 48000;

        public static void GetDSPBufferSize(out int bufferLength, out int numBuffers)
        {
            bufferLength = 1024;
            numBuffers = 4;
        }
    }

    public static class Application
    {
        public static event Action quitting;

        internal static void Quit() => quitting?.Invoke();
    }

    public static class Debug
    {
        public static void Log(object message)
        {
        }

        public static void LogWarning(object message)
        {
        }

        public static void LogError(object message)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class SerializeField : Attribute
    {
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TooltipAttribute : Attribute
    {
        public TooltipAttribute(string tooltip)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class HeaderAttribute : Attribute
    {
        public HeaderAttribute(string header)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class RangeAttribute : Attribute
    {
        public RangeAttribute(float min, float max)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Class, AllowMultiple = true)]
    public sealed class RequireComponent : Attribute
    {
        public RequireComponent(Type requiredComponent)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class DisallowMultipleComponent : Attribute
    {
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AddComponentMenu : Attribute
    {
        public AddComponentMenu(string menuName)
        {
        }
    }
}

namespace UnityEngine.Events
{
    public delegate void UnityAction();

    public delegate void UnityAction<T0>(T0 arg0);

    public delegate void UnityAction<T0, T1>(T0 arg0, T1 arg1);

    public class UnityEvent
    {
        public void Invoke()
        {
        }

        public void AddListener(UnityAction call)
        {
        }
    }

    public abstract class UnityEvent<T0>
    {
        public void Invoke(T0 arg0)
        {
        }

        public void AddListener(UnityAction<T0> call)
        {
        }
    }

    public abstract class UnityEvent<T0, T1>
    {
        public void Invoke(T0 arg0, T1 arg1)
        {
        }

        public void AddListener(UnityAction<T0, T1> call)
        {
        }
    }
}
