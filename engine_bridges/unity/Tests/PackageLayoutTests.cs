using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using NUnit.Framework;

namespace NpcVoice.Tests
{
    /// <summary>
    /// A package installed from a git URL is read-only: Unity ignores any asset without a committed .meta file.
    /// Checks the package folder given by $NPC_VOICE_UNITY_PACKAGE (run_tests.sh sets it).
    /// </summary>
    [TestFixture]
    public class PackageLayoutTests
    {
        private static string Root()
        {
            string root = Environment.GetEnvironmentVariable("NPC_VOICE_UNITY_PACKAGE");
            if (string.IsNullOrEmpty(root))
            {
                Assert.Ignore("NPC_VOICE_UNITY_PACKAGE is not set");
            }
            return root;
        }

        private static bool HiddenFromUnity(string name) => name.StartsWith(".", StringComparison.Ordinal) || name.EndsWith("~", StringComparison.Ordinal);

        private static IEnumerable<string> Assets(string dir)
        {
            foreach (string entry in Directory.GetFileSystemEntries(dir))
            {
                string name = Path.GetFileName(entry);
                if (HiddenFromUnity(name) || name.EndsWith(".meta", StringComparison.Ordinal))
                {
                    continue;
                }
                yield return entry;
                if (Directory.Exists(entry))
                {
                    foreach (string inner in Assets(entry))
                    {
                        yield return inner;
                    }
                }
            }
        }

        [Test]
        public void EveryAssetHasAMetaFileWithAUniqueGuid()
        {
            string root = Root();
            var missing = new List<string>();
            var guids = new Dictionary<string, string>();
            foreach (string asset in Assets(root))
            {
                string meta = asset + ".meta";
                if (!File.Exists(meta))
                {
                    missing.Add(asset.Substring(root.Length));
                    continue;
                }
                string guidLine = File.ReadAllLines(meta).FirstOrDefault(l => l.StartsWith("guid: ", StringComparison.Ordinal));
                Assert.IsNotNull(guidLine, meta + " has no guid");
                string guid = guidLine.Substring(6).Trim();
                Assert.AreEqual(32, guid.Length, meta);
                string other;
                Assert.IsFalse(guids.TryGetValue(guid, out other), meta + " reuses the guid of " + other);
                guids[guid] = meta;
            }
            Assert.IsEmpty(missing, "run Tools~/make_meta.sh; missing .meta for: " + string.Join(", ", missing.ToArray()));
            Assert.Greater(guids.Count, 20);
        }

        [Test]
        public void ManifestNamesTheSampleFolder()
        {
            string root = Root();
            var manifest = (Dictionary<string, object>)MiniJson.Parse(File.ReadAllText(Path.Combine(root, "package.json")));
            StringAssert.IsMatch("^[a-z0-9.-]+$", (string)manifest["name"]);
            foreach (Dictionary<string, object> sample in (List<object>)manifest["samples"])
            {
                Assert.IsTrue(Directory.Exists(Path.Combine(root, (string)sample["path"])), "sample path " + sample["path"]);
            }
        }
    }
}
