## Editor plugin: nothing to set up. The NpcVoice node registers itself through its
## class_name; enabling the plugin just makes the addon show up in Project Settings.
@tool
extends EditorPlugin
